"""Built-in pruners; each is one file, registered through the `prunebench.pruners` entry points."""
