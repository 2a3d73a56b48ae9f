"""One ingestion for every reader of a folder of results (board, plots, JSON, HTML, validate): which
files are kept, which are left out and why, and how runs of one (pruner, seed, protocol) are told
apart (the same run counted once, conflicting ones named).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.core.io import canonical_sha256
from bench.results.files import ResultFileError, load_result, one_line, read_report, report_vouches_for
from bench.results.schema import PARENT, RunResult
from bench.results.uncertainty import ReplicateKey, replicate_key


class Ingested(NamedTuple):
    """Result files to be ranked together (bench.results.load_results)."""

    kept: list[tuple[Path, RunResult]]  # (path, result), in the order given
    errors: list[str]  # one line `<file>: <what is wrong>` per file left out
    notes: list[str]  # one line per run held by several files, counted once (not an error)


def load_results(paths: Sequence[Path], test_set_sizes: Mapping[str, int] | None = None) -> Ingested:
    """The one ingestion of result files, for the board (markdown, JSON, HTML), `bench plot` and
    `bench validate`: the files kept, one line per file left out, and notes.

    Each file must load (load_result); then within each replicate group (dataset, model, suites,
    protocol) the files must share their test sets (check_test_sets) and agree wherever two hold the
    same pruner and seed (check_duplicates): the same results are one run, counted once (a note);
    other results are an error naming both files.
    """
    loaded, errors = [], []
    for path in dict.fromkeys(Path(p) for p in paths):  # a file named twice is read once
        try:
            loaded.append((Path(path), load_result(path, test_set_sizes)))
        except ResultFileError as exc:
            errors.append(one_line(str(exc)))
    groups: dict[ReplicateKey, list[tuple[Path, RunResult]]] = defaultdict(list)
    for pair in loaded:
        groups[replicate_key(pair[1])].append(pair)
    rejected: dict[Path, str] = {}
    redundant: set[Path] = set()
    notes: list[str] = []
    for key, members in groups.items():
        members = sorted(members, key=lambda pair: str(pair[0]))
        rejected |= check_test_sets(key, members)
        duplicates = check_duplicates(key, [pair for pair in members if pair[0] not in rejected])
        rejected |= duplicates.rejected
        redundant |= duplicates.redundant
        notes += duplicates.notes
    errors += [one_line(f"{path}: {why}") for path, why in sorted(rejected.items(), key=lambda item: str(item[0]))]
    return Ingested([pair for pair in loaded if pair[0] not in rejected and pair[0] not in redundant], errors,
                    [one_line(note) for note in notes])


def check_test_sets(key: ReplicateKey, members: Sequence[tuple[Path, RunResult]],
                    vouched: Callable[[Path, RunResult], bool] | None = None) -> dict[Path, str]:
    """Path -> why, for the files of one replicate group whose test sets disagree with the majority:
    every file must have the same (name, n_examples) list, and files of one seed (same data split,
    same corruption draws) the same checksums too. Ties are decided by content (`_outvoted`), never
    by file names; `vouched` says whether a file's verify report vouches for it."""
    vouched = vouched or _vouched
    rejected = _outvoted(members, lambda r: {d.name: d.n_examples for d in r.distributions}, "size",
                         f"files of protocol {key.protocol}", vouched)
    seeds: dict[int, list[tuple[Path, RunResult]]] = defaultdict(list)
    for path, result in members:
        if path not in rejected:
            seeds[result.config.seed].append((path, result))
    for seed, same in sorted(seeds.items()):
        rejected |= _outvoted(same, lambda r: dict(r.provenance.distribution_checksums), "checksum",
                              f"seed-{seed} files of protocol {key.protocol}", vouched)
    return rejected


def _vouched(path: Path, result: RunResult) -> bool:
    return report_vouches_for(path, result, read_report(path))


def _outvoted(
    members: Sequence[tuple[Path, RunResult]], describe: Callable[[RunResult], dict[str, Any]], what: str, among: str,
    vouched: Callable[[Path, RunResult], bool],
) -> dict[Path, str]:
    """Path -> why, for members whose test-set description (name -> size or checksum) differs from
    the most common one. Decided by content: where several descriptions are equally common, the one
    a verified file holds wins if exactly one does; else no file of the tie is ranked."""
    found = [describe(result) for _, result in members]
    keys = [tuple(sorted(sets.items())) for sets in found]
    counts = Counter(keys)
    top = max(counts.values())
    tied = [k for k in dict.fromkeys(keys) if counts[k] == top]
    if len(tied) > 1:
        backed = [k for k in tied if any(vouched(path, result) for (path, result), own in zip(members, keys) if own == k)]
        if len(backed) != 1:
            return {path: (f"its {len(found[i])} test sets differ from those of other {among}, and as many files "
                           "hold each version with none verified alone: none of them is ranked")
                    for i, (path, _) in enumerate(members) if keys[i] in tied}
        tied = backed
    majority = tied[0]
    wanted, example = found[keys.index(majority)], members[keys.index(majority)][0]
    rejected = {}
    for (path, _), own, sets in zip(members, found, keys):
        if sets == majority:
            continue
        missing, extra = sorted(wanted.keys() - own.keys()), sorted(own.keys() - wanted.keys())
        changed = sorted(name for name in wanted.keys() & own.keys() if wanted[name] != own[name])
        detail = (f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}" if extra
                  else f"has another {what} of {changed[0]!r}")
        rejected[path] = (f"its {len(own)} test sets differ from those of the {counts[majority]} of {len(members)} "
                          f"{among} that agree (e.g. {example}): it {detail}")
    return rejected


def _pruner_content(result: RunResult, pruner: str) -> str:
    """A digest of what a file says about one pruner: its networks and the parent they start from."""
    nets = [n.model_dump(mode="json") for n in result.networks if n.pruner in (pruner, PARENT)]
    return canonical_sha256(nets)


class Duplicates(NamedTuple):
    """What check_duplicates decided for one replicate group."""

    rejected: dict[Path, str]  # files that disagree with another about a (pruner, seed) -> why
    redundant: set[Path]  # files whose every run another ranked file holds with the same results
    notes: list[str]  # one line per (pruner, seed) held by several files with the same results


def check_duplicates(key: ReplicateKey, members: Sequence[tuple[Path, RunResult]],
                     vouched: Callable[[Path, RunResult], bool] | None = None) -> Duplicates:
    """Files of one replicate group that hold a (pruner, seed) another file holds too. Decided by
    content, never by file names. Files that disagree about the pruner are all left out, unless
    exactly one of them is verified (`vouched`: its `bench verify` report vouches for it), which then
    stays. Files that say the same about it hold one run: it is counted once (from the file with the
    most networks, then the smallest integrity digest), with a note, and each file's other pruners
    stay ranked; a file that holds nothing else is redundant (left out, noted, not an error)."""
    vouched = vouched or _vouched
    holders: dict[tuple[str, int], list[tuple[Path, RunResult]]] = defaultdict(list)
    for path, result in members:
        for pruner in sorted({n.pruner for n in result.networks if n.pruner != PARENT}):
            holders[(pruner, result.config.seed)].append((path, result))

    def where(pruner: str, seed: int) -> str:
        return f"pruner {pruner!r} with seed {seed} of protocol {key.protocol}"

    rejected: dict[Path, str] = {}
    for (pruner, seed), files in sorted(holders.items()):
        if len(files) < 2 or len({_pruner_content(result, pruner) for _, result in files}) == 1:
            continue
        verified = [path for path, result in files if vouched(path, result)]
        names = ", ".join(str(path) for path, _ in files)
        for path, _ in files:
            if len(verified) == 1 and path == verified[0]:
                continue
            rejected[path] = (f"{where(pruner, seed)} is also in another file with other results ({names}); "
                              + (f"the verified {verified[0]} is ranked" if len(verified) == 1
                                 else "none is verified alone, so none is ranked: keep the right one in the folder "
                                      "(`bench verify FILE` marks it verified) and move the others out"))
    counted_elsewhere: dict[Path, set[str]] = defaultdict(set)
    notes = []
    for (pruner, seed), files in sorted(holders.items()):
        files = [pair for pair in files if pair[0] not in rejected]
        if len(files) < 2:
            continue
        keep = min(files, key=lambda pair: (-len(pair[1].networks), pair[1].integrity))[0]
        others = [path for path, _ in files if path != keep]
        for path in others:
            counted_elsewhere[path].add(pruner)
        notes.append(f"{where(pruner, seed)}: {', '.join(map(str, others))} "
                     f"{'holds' if len(others) == 1 else 'hold'} the same results as {keep}: one run, counted once")
    redundant = {path for path, result in members if path not in rejected and counted_elsewhere[path]
                 and counted_elsewhere[path] >= {n.pruner for n in result.networks if n.pruner != PARENT}}
    return Duplicates(rejected, redundant, notes)


