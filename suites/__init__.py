"""Built-in suites; each is one file, registered through the `prunebench.suites` entry points."""
