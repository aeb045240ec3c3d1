"""LaTeX text: one escape for every table marble-eval writes (special characters and the Unicode marks)."""

from __future__ import annotations

# Characters LaTeX treats specially, then the Unicode the tables use (marks, Δ, ≈, ±, R², dashes).
_ESCAPES = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
            ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"))
_UNICODE = (("†", r"\dag{}"), ("‡", r"\ddag{}"), ("§", r"\S{}"), ("Δ", r"$\Delta$"), ("≈", r"$\approx$"),
            ("±", r"$\pm$"), ("²", r"$^2$"), ("×", r"$\times$"), ("−", "-"), ("–", "--"), ("≥", r"$\geq$"))


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source: special characters escaped, the tables' Unicode marks as LaTeX commands."""
    out = []
    for char in str(text):
        replaced = next((escaped for c, escaped in _ESCAPES if c == char), None)
        if replaced is None:
            replaced = next((escaped for c, escaped in _UNICODE if c == char), char)
        out.append(replaced)
    return "".join(out)
