"""Results as text and pictures: markdown tables (`markdown`), the house figure style (`figures`:
sizes, fonts, legends and text that fit), and the result figures of `bench plot` (`plots`).

Layer: reports. May import: bench.core, bench.results, bench.corruptions.
"""
