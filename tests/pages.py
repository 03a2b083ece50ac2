"""Reading a report page's markup in tests: its tags, text and ids, and anything in it that could
make a browser fetch something."""

from __future__ import annotations

import re
from html.parser import HTMLParser

FETCHING = ("src", "href", "xlink:href", "action", "srcset", "poster", "data", "formaction", "background")


class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.tags if "id" in a]


def external_references(html: str) -> list[str]:
    """Attributes that load something and CSS url()s, except in-page fragments (`#id`)."""
    refs = [v for _, attrs in Page(html).tags for k, v in attrs.items()
            if k in FETCHING and v and not v.startswith("#")]
    refs += [u for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html) if not u.startswith("#")]
    refs += re.findall(r"@import[^;]*", html)
    return refs
