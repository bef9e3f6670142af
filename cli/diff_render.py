"""Render a ``Diff`` for people: sections, a coloured unified diff per prompt, tensor changes."""

from __future__ import annotations

from cli.output import esc, short, size

_COLOUR = {"added": "green", "removed": "red", "changed": "yellow", "unchanged": "dim"}
_SIGN = {"added": "+", "removed": "-", "changed": "~", "unchanged": " "}


def render(out, d, *, stat: bool = False) -> None:
    """Print the diff on a rich console; ``stat`` keeps one summary line per change."""
    verdict = "[yellow]contents differ[/]" if d.differs else "[green]identical contents[/]"
    out.print(f"[bold]diff {esc(_label(d.a))} -> {esc(_label(d.b))}[/]  {verdict}")
    _image(out, d.image)
    _runtime(out, d.runtime)
    for p in d.prompts:
        _prompt(out, p, stat=stat)
    for w in d.weights:
        if not (stat and w.status == "unchanged"):
            _weight(out, w, stat=stat)
    if stat and (same := sum(w.status == "unchanged" for w in d.weights)):
        out.print(f"weight   [dim]  {same} unchanged[/]")
    for p in d.probes:
        fields = esc(f" ({', '.join(p.fields)})") if p.fields else ""
        out.print(f"probe    [{_COLOUR[p.status]}]{_SIGN[p.status]} {esc(p.name)}[/]{fields}")
    if d.changelog.old != d.changelog.new:
        out.print(f"message  {esc(repr(_first(d.changelog.old)))} -> {esc(repr(_first(d.changelog.new)))}")
    if d.provenance.changed:
        out.print(f"git      {esc(_git(d.provenance.old))} -> {esc(_git(d.provenance.new))}")


def _image(out, image) -> None:
    if not image.changed:
        return out.print(f"image    unchanged  {esc(image.new.ref or '-')}")
    out.print(f"image    [yellow]~[/] {esc(image.old.ref or '-')} ({short(image.old.digest)}) -> "
              f"{esc(image.new.ref or '-')} ({short(image.new.digest)})")


def _runtime(out, rt) -> None:
    if not rt.changed:
        return out.print("runtime  unchanged")
    for k in rt.env:
        value = {"added": f"={k.new}", "removed": "", "changed": f": {k.old} -> {k.new}"}[k.status]
        out.print(f"env      [{_COLOUR[k.status]}]{_SIGN[k.status]} {esc(k.key)}[/]{esc(value)}")
    for name in rt.secrets_added:
        out.print(f"secret   [green]+ {esc(name)}[/] (name only)")
    for name in rt.secrets_removed:
        out.print(f"secret   [red]- {esc(name)}[/] (name only)")
    for s in rt.settings:
        out.print(f"runtime  [yellow]~ {esc(s.field)}[/]: {esc(s.old)} -> {esc(s.new)}")


def _prompt(out, p, *, stat: bool) -> None:
    if not p.changed:
        return out.print(f"prompt   [dim]  {esc(p.name)} unchanged[/]")
    out.print(f"prompt   [{_COLOUR[p.status]}]{_SIGN[p.status]} {esc(p.name)}[/] "
              f"([green]+{p.lines_added}[/] [red]-{p.lines_removed}[/])")
    if stat:
        return
    if p.too_large:
        return out.print(f"    [yellow]too large to show line by line[/] ({p.old_lines} lines before, {p.new_lines} "
                         f"after); the full texts: `registry blame {esc(p.name)} --at REF --text`")
    for line in p.unified.splitlines():
        colour = ("bold" if line.startswith(("---", "+++")) else "cyan" if line.startswith("@@")
                  else "green" if line.startswith("+") else "red" if line.startswith("-") else None)
        out.print(f"    [{colour}]{esc(line)}[/]" if colour else f"    {esc(line)}")


def _weight(out, w, *, stat: bool) -> None:
    sizes = (size(w.new_size) if w.old_size is None else size(w.old_size) if w.new_size is None
             else size(w.new_size) if w.old_size == w.new_size else f"{size(w.old_size)} -> {size(w.new_size)}")
    out.print(f"weight   [{_COLOUR[w.status]}]{_SIGN[w.status]} {esc(w.path)}[/]  {sizes}")
    if not w.tensors:
        return
    t = w.tensors
    out.print(f"           tensors: {len(t.added)} added, {len(t.removed)} removed, "
              f"{len(t.changed)} changed, {t.unchanged} unchanged")
    if stat:
        return
    for name in t.added:
        out.print(f"           [green]+ {esc(name)}[/]")
    for name in t.removed:
        out.print(f"           [red]- {esc(name)}[/]")
    for name in t.changed:
        out.print(f"           [yellow]~ {esc(name)}[/] ({esc(', '.join(t.kinds[name]))})")


def _label(side) -> str:
    full = f"{side.model}@{side.version}"
    return full if side.ref == full else f"{side.ref} ({full})"


def _first(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def _git(pv) -> str:
    if pv is None or not pv.commit:
        return "(no git)"
    return pv.commit[:10] + (" (dirty)" if pv.dirty else "")
