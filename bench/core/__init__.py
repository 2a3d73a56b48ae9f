"""The foundation every layer may use: canonical JSON, hashing and atomic writes (`io`), the
entry-point registries of plugins (`registry`), devices (`devices`), and the allocator settings
every process of the project takes (`_allocator`).

Layer: core. May import: nothing of bench.
"""
