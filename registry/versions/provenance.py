"""Where a version came from: the git work tree it was pushed from (GitPython)."""

from __future__ import annotations

import re
from pathlib import Path

from registry import clock
from registry.models import FileProvenance, Provenance

_CREDENTIALS = re.compile(r"//[^/@]+@")


def collect(root: Path, files: dict[str, Path]) -> Provenance | None:
    """Commit, branch, remote and dirty flag of the repo holding ``root``; per file, its last commit.

    ``files`` maps a key (e.g. ``prompts/system``) to a path. Returns None outside a work tree.
    """
    import git  # GitPython costs ~70 ms to import; only pushes need it

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.bare or repo.working_tree_dir is None:
        return None
    with repo:
        head = _head(repo)
        top = Path(repo.working_tree_dir).resolve()
        dirty_paths = _dirty_paths(repo)
        return Provenance(
            commit=head.hexsha if head else None,
            branch=None if repo.head.is_detached else repo.active_branch.name,
            remote=_remote(repo),
            dirty=bool(dirty_paths),
            files={key: _file(repo, top, path, dirty_paths, head) for key, path in files.items()},
        )


def _head(repo):
    try:
        return repo.head.commit
    except ValueError:  # a repository without commits yet
        return None


def _remote(repo) -> str | None:
    try:
        url = next(iter(repo.remotes)).url
    except StopIteration:
        return None
    return _CREDENTIALS.sub("//", url)  # never record a token embedded in a remote URL


def _dirty_paths(repo) -> set[str]:
    if _head(repo) is None:
        return set(repo.untracked_files) | {d.a_path for d in repo.index.diff(None)}
    changed = {d.a_path for d in repo.index.diff(None)} | {d.a_path for d in repo.index.diff("HEAD")}
    return changed | set(repo.untracked_files)


def _file(repo, top: Path, path: Path, dirty_paths: set[str], head) -> FileProvenance:
    rel = path.resolve().relative_to(top).as_posix()
    last = next(repo.iter_commits(paths=rel, max_count=1), None) if head else None
    if last is None:
        return FileProvenance(dirty=True)
    return FileProvenance(
        commit=last.hexsha,
        author=f"{last.author.name} <{last.author.email}>",
        time=clock.utc(last.authored_datetime),
        dirty=rel in dirty_paths,
    )
