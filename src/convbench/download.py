"""``convbench download``: put a data set's raw files in a directory, each verified by checksum.

Known local copies are tried before the network. Nothing unverified ever appears under a final
name, so a directory filled by hand (or by an earlier run) is as good as a download and works
without network. ``digits`` is scikit-learn's bundled 8x8 digits: its raw file is written from
scikit-learn's copy, with no network at all.

The fetching is hand-written rather than pooch's ``retrieve``: it streams each file through both
checksums at once (:class:`convbench.datasets.RawDigests`), accepts a re-gzipped copy by its
content, and tries local copies first; pooch checks a file's own hash only.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit
from urllib.request import Request, urlopen

import numpy as np
from tqdm.auto import tqdm

from convbench import __version__
from convbench._io import atomic_write, run_cli, sha256_file, write_npz_deterministic
from convbench.datasets import (
    DATASETS,
    DIGITS_FILE,
    MIRRORS_ENV,
    ChecksumError,
    DataError,
    DatasetSpec,
    RawDigests,
    checksum_problem,
    chunks,
    digest_file,
    expected_errors,
    get_spec,
    load_study_checked,
    match_checksum,
    names_help,
    read_digits_raw,
    reason,
)

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: a dead mirror fails fast, a slow one still works
URL_SCHEMES = ("http", "https", "file")


def download(
    name: str,
    out_dir: str | Path,
    mirror: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """Make ``out_dir`` hold the dataset's raw files, each verified; return their paths.

    A file already there that passes :func:`match_checksum` is kept untouched (so a directory
    filled by hand works offline, and its modification time does not trigger pipeline reruns).
    Otherwise each source is tried in turn: ``mirror`` alone if given (an http/https/file URL or a
    local directory); else local copies first (the entries of ``$CONVBENCH_DATA_MIRRORS``, then
    the directories a system package installs, such as Debian's), then torchvision's mirrors. A
    download streams into a temporary file that is renamed into place only after it verified; on
    any failure, Ctrl-C included, the temporary file is removed. ``say`` receives one line per file
    telling where it came from and which checksum it matched.

    ``digits`` needs no network (``mirror`` is ignored): its raw file is scikit-learn's bundled
    copy, written as ``digits.npz`` (uint8 images 0..16 and int64 targets), rewritten only if its
    content differs; :func:`prepare` records its sha256 in ``source_sha256``.
    """
    spec = get_spec(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not spec.resources:
        return [_write_digits_raw(out_dir / DIGITS_FILE)]
    if mirror is not None and not _is_url(str(mirror)) and not Path(mirror).is_dir():
        raise DataError(
            f"mirror {str(mirror)!r} is neither a URL ({', '.join(URL_SCHEMES)}) "
            "nor an existing directory"
        )
    sources = [str(mirror)] if mirror is not None else [*local_sources(spec), *spec.mirrors]
    return [
        _fetch_verified(spec, file, out_dir, sources, progress, say or (lambda line: None))
        for file, _ in spec.resources
    ]


def local_sources(spec: DatasetSpec) -> list[str]:
    """Local copies to try before the network: ``$CONVBENCH_DATA_MIRRORS``, then system copies.

    A directory entry of the variable is used as ``DIR/<dataset>`` when that exists (one variable
    can serve several data sets), else as ``DIR``. Directories that do not exist are skipped.
    """
    found: list[str] = []
    for entry in filter(None, os.environ.get(MIRRORS_ENV, "").split(os.pathsep)):
        if _is_url(entry):
            found.append(entry)
        elif (Path(entry) / spec.name).is_dir():
            found.append(str(Path(entry) / spec.name))
        elif Path(entry).is_dir():
            found.append(entry)
    found += [directory for directory in spec.local_copies if Path(directory).is_dir()]
    return list(dict.fromkeys(found))


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in URL_SCHEMES


def _fetch_verified(
    spec: DatasetSpec,
    file: str,
    out_dir: Path,
    sources: list[str],
    progress: bool,
    say: Callable[[str], None],
) -> Path:
    target = out_dir / file
    stale = ""
    if target.is_file():
        digests = digest_file(target)
        matched = match_checksum(spec, file, digests)
        if matched:
            say(f"{file}: already in {out_dir}, matches {matched}")
            return target
        stale = f" ({target} exists but failed its checksum, so it was not used)"

    failures: list[str] = []
    checksum_failed = False
    for base in sources:
        location = (
            urljoin(base.rstrip("/") + "/", file) if _is_url(base) else str(Path(base) / file)
        )
        try:
            with _open_source(location) as (stream, size):
                digests = RawDigests()
                verified_copy = functools.partial(
                    _copy_verified,
                    stream=stream,
                    size=size,
                    spec=spec,
                    file=file,
                    location=location,
                    progress=progress,
                    digests=digests,
                )
                atomic_write(target, verified_copy)
            say(f"{file}: from {location}, matches {match_checksum(spec, file, digests)}")
            return target
        except ChecksumError as exc:
            checksum_failed = True
            failures.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            failures.append(f"{location} ({reason(exc)})")

    message = (
        f"could not get a verified {file}{stale}; tried {'; '.join(failures) or 'no sources'}. "
        f"Use --mirror URL_OR_DIR (a URL or directory holding {', '.join(spec.raw_files)}), "
        f"list such directories in ${MIRRORS_ENV}, or put those files in {out_dir} yourself"
    )
    raise (ChecksumError if checksum_failed else DataError)(message)


@contextmanager
def _open_source(location: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """Open a URL or a local file for streaming; also yield its size where the source says it."""
    if not _is_url(location):
        with open(location, "rb") as file:
            yield file, Path(location).stat().st_size
        return
    request = Request(location, headers={"User-Agent": f"convbench/{__version__}"})
    with urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None


def _copy_verified(
    out: IO[bytes],
    *,
    stream: IO[bytes],
    size: int | None,
    spec: DatasetSpec,
    file: str,
    location: str,
    progress: bool,
    digests: RawDigests,
) -> None:
    """Copy ``stream`` to ``out``, feeding ``digests``; raise ChecksumError (nothing is kept)
    unless it verifies."""
    with tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=file, disable=not progress
    ) as bar:
        for chunk in chunks(stream):
            out.write(chunk)
            digests.update(chunk)
            bar.update(len(chunk))
    truncated = size is not None and digests.size != size
    matched = None if truncated else match_checksum(spec, file, digests)
    if matched is None:
        detail = f"; received {digests.size} of {size} bytes" if truncated else ""
        raise ChecksumError(
            f"{location}: {file} failed its checksum ({checksum_problem(spec, file, digests)}{detail})"
        )


def _write_digits_raw(path: Path) -> Path:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # the values are the integers 0..16
    target = bunch.target.astype(np.int64)
    if path.is_file():
        try:
            old_images, old_target = read_digits_raw(path)
        except DataError:
            pass
        else:
            if np.array_equal(old_images, images) and np.array_equal(old_target, target):
                return path  # untouched: same data, same modification time
    return write_npz_deterministic(path, {"images": images, "target": target})




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convbench download",
        description="Put a dataset's raw files in a directory, each verified by its checksum "
        "(of the file, or of its decompressed content). Without --mirror, local copies are tried "
        f"before the network: the directories in ${MIRRORS_ENV} (separated by "
        f"'{os.pathsep}'), then where a system package installs the data (Debian's "
        "dataset-fashion-mnist). Prints 'sha256  path' per file; where each file came from "
        "goes to stderr. With --study, the study is checked first and gives the data set, the "
        "mirror and the directory.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", choices=sorted(DATASETS), help=names_help())
    parser.add_argument("--study", type=Path, metavar="FILE",
                        help="a study file (params.yaml): data set, mirror and directory from it")
    parser.add_argument("--out", type=Path, metavar="DIR", help="raw-file directory")
    parser.add_argument(
        "--mirror",
        metavar="URL_OR_DIR",
        help="fetch from this URL (http, https, file) or local directory only",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``convbench download NAME --out DIR [--mirror URL_OR_DIR] [--no-progress]``, or
    ``convbench download --study params.yaml`` for the study's data set, where the pipeline reads it."""
    parser = build_parser()

    def action(args: argparse.Namespace) -> None:
        if args.study is None:
            if args.name is None or args.out is None:
                parser.error("give NAME and --out DIR (or --study FILE)")
            name, out, mirror = args.name, args.out, args.mirror
        else:
            if args.name is not None or args.out is not None:
                parser.error("--study takes the data set and the directory from the study: drop NAME and --out")
            study = load_study_checked(args.study)
            name, out, mirror = study.dataset, Path(study.raw_dir), args.mirror or study.mirror
            if study.images:  # a folder of the project's own images: take stock, copy nothing
                from convbench.imagefolder import take_stock

                path = take_stock(study.dataset, study.images, out)
                print(f"{sha256_file(path)}  {path}")
                return
        for path in download(
            name,
            out,
            mirror=mirror,
            progress=not args.no_progress,
            say=lambda line: print(f"convbench download: {line}", file=sys.stderr),
        ):
            print(f"{sha256_file(path)}  {path}")

    return run_cli(parser, argv, action, expected=expected_errors())


