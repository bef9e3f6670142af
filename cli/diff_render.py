"""Render a ``Diff`` for people: sections, a coloured unified diff per prompt, tensor changes."""

from __future__ import annotations

from cli.output import short, size

_COLOUR = {"added": "green", "removed": "red", "changed": "yellow", "unchanged": "dim"}
_SIGN = {"added": "+", "removed": "-", "changed": "~", "unchanged": " "}


def render(out, d, *, stat: bool = False) -> None:
    """Print the diff on a rich console; ``stat`` keeps one summary line per change."""
    from rich.markup import escape

    verdict = "[yellow]contents differ[/]" if d.differs else "[green]identical contents[/]"
    out.print(f"[bold]diff {escape(_label(d.a))} -> {escape(_label(d.b))}[/]  {verdict}")
    _image(out, d.image)
    _runtime(out, d.runtime)
    for p in d.prompts:
        _prompt(out, p, stat=stat)
    for w in d.weights:
        _weight(out, w, stat=stat)
    for p in d.probes:
        fields = f" ({', '.join(p.fields)})" if p.fields else ""
        out.print(f"probe    [{_COLOUR[p.status]}]{_SIGN[p.status]} {p.name}[/]{fields}")
    if d.changelog.old != d.changelog.new:
        out.print(f"message  {escape(_first(d.changelog.old))!r} -> {escape(_first(d.changelog.new))!r}")
    if d.provenance.changed:
        out.print(f"git      {_git(d.provenance.old)} -> {_git(d.provenance.new)}")


def _image(out, image) -> None:
    if not image.changed:
        return out.print(f"image    unchanged  {image.new.ref or '-'}")
    out.print(f"image    [yellow]~[/] {image.old.ref or '-'} ({short(image.old.digest)}) -> "
              f"{image.new.ref or '-'} ({short(image.new.digest)})")


def _runtime(out, rt) -> None:
    from rich.markup import escape

    if not rt.changed:
        return out.print("runtime  unchanged")
    for k in rt.env:
        value = {"added": f"={k.new}", "removed": "", "changed": f": {k.old} -> {k.new}"}[k.status]
        out.print(f"env      [{_COLOUR[k.status]}]{_SIGN[k.status]} {k.key}[/]{escape(value)}")
    for name in rt.secrets_added:
        out.print(f"secret   [green]+ {name}[/] (name only)")
    for name in rt.secrets_removed:
        out.print(f"secret   [red]- {name}[/] (name only)")
    for s in rt.settings:
        out.print(f"runtime  [yellow]~ {s.field}[/]: {escape(str(s.old))} -> {escape(str(s.new))}")


def _prompt(out, p, *, stat: bool) -> None:
    from rich.markup import escape

    if not p.changed:
        return out.print(f"prompt   [dim]  {p.name} unchanged[/]")
    out.print(f"prompt   [{_COLOUR[p.status]}]{_SIGN[p.status]} {p.name}[/] "
              f"([green]+{p.lines_added}[/] [red]-{p.lines_removed}[/])")
    if stat:
        return
    for line in p.unified.splitlines():
        colour = ("bold" if line.startswith(("---", "+++")) else "cyan" if line.startswith("@@")
                  else "green" if line.startswith("+") else "red" if line.startswith("-") else None)
        out.print(f"    [{colour}]{escape(line)}[/]" if colour else f"    {escape(line)}")


def _weight(out, w, *, stat: bool) -> None:
    sizes = (size(w.new_size) if w.old_size is None else size(w.old_size) if w.new_size is None
             else size(w.new_size) if w.old_size == w.new_size else f"{size(w.old_size)} -> {size(w.new_size)}")
    out.print(f"weight   [{_COLOUR[w.status]}]{_SIGN[w.status]} {w.path}[/]  {sizes}")
    if not w.tensors:
        return
    t = w.tensors
    out.print(f"           tensors: {len(t.added)} added, {len(t.removed)} removed, "
              f"{len(t.changed)} changed, {t.unchanged} unchanged")
    if stat:
        return
    for name in t.added:
        out.print(f"           [green]+ {name}[/]")
    for name in t.removed:
        out.print(f"           [red]- {name}[/]")
    for name in t.changed:
        out.print(f"           [yellow]~ {name}[/] ({', '.join(t.kinds[name])})")


def _label(side) -> str:
    full = f"{side.model}@{side.version}"
    return full if side.ref == full else f"{side.ref} ({full})"


def _first(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""


def _git(pv) -> str:
    if pv is None or not pv.commit:
        return "(no git)"
    return pv.commit[:10] + (" (dirty)" if pv.dirty else "")
