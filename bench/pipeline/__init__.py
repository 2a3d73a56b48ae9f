"""Running the protocol: the run configuration (`config`), job specs and keys (`specs`), the jobs
(`jobs`) and their content-addressed store (`store`), executors and the job graph (`executors`,
`scheduler`; `shipping` and `job_files` carry jobs to machines that do not see the store), `bench
run` (`runner`), `bench plan` (`plan`), `bench eval` (`external`), `bench verify` (`verify`,
`verdict`), training and evaluation (`training`) and torch.export archives (`exported`).

Layer: pipeline. May import: bench.core, bench.corruptions, bench.results, bench.reports, bench.data,
bench.models, bench.pruning.
"""
