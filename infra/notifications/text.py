"""Fitting a rendered message into what a chat service accepts (sizes, a title shown apart)."""

ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


def truncate_utf8(text: str, max_bytes: int, *, marker: str = ELLIPSIS) -> str:
    """`text` if its UTF-8 form fits in `max_bytes`, else its longest prefix (whole characters
    only, never half of a multi-byte one) plus `marker`, all within `max_bytes`."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    room = max(max_bytes - len(marker.encode()), 0)
    # errors="ignore" drops the bytes of a character cut in the middle: the prefix stays valid.
    return encoded[:room].decode("utf-8", errors="ignore") + marker


def truncate_chars(text: str, max_chars: int, *, marker: str = ELLIPSIS) -> str:
    """`text` cut to at most `max_chars` characters (for limits counted in characters)."""
    if len(text) <= max_chars:
        return text
    return text[: max(max_chars - len(marker), 0)] + marker


def without_heading(markdown: str) -> str:
    """The markdown body without its leading `# title` line, for services that show the title
    in a header of their own (a Feishu card, a Slack header block)."""
    first, newline, rest = markdown.partition("\n")
    if not first.lstrip().startswith("#"):
        return markdown
    return rest.lstrip("\n") if newline else ""
