# IPython.display for images without IPython: each object prints a text form to stdout, which is
# what a workload's log can show. HTML shows its text without tags, Markdown and Latex their
# source, images a one-line description; other objects their repr, like IPython's text/plain.
import base64
import json
import os
import sys
from html.parser import HTMLParser

__all__ = ["display", "display_html", "display_markdown", "display_pretty", "display_json", "clear_output",
           "update_display", "DisplayHandle", "DisplayObject", "HTML", "Markdown", "Latex", "Math", "SVG",
           "JSON", "Javascript", "Pretty", "Code", "Image", "FileLink", "IFrame"]


def _emit(text):
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _text(obj):
    f = getattr(obj, "_fairing_text", None)
    return f() if callable(f) else repr(obj)


class DisplayHandle:
    def __init__(self, display_id=None):
        self.display_id = display_id

    def display(self, obj, **kwargs):
        display(obj)

    def update(self, obj, **kwargs):
        display(obj)


def display(*objs, include=None, exclude=None, metadata=None, transient=None, display_id=None, raw=False,
            clear=False, **kwargs):
    for obj in objs:
        if raw and isinstance(obj, dict):
            _emit(str(obj.get("text/plain", obj)))
        else:
            _emit(_text(obj))
    if display_id:
        return DisplayHandle(None if display_id is True else display_id)
    return None


def update_display(obj, *, display_id, **kwargs):
    display(obj)


def clear_output(wait=False):
    """Nothing to clear in a log."""


def _display_as(cls):
    def show(*objs, raw=False, **kwargs):
        for obj in objs:
            display(cls(obj) if raw else obj)
    return show


class DisplayObject:
    """Data from `data`, `url` (not fetched: described) or `filename` (read)."""

    def __init__(self, data=None, url=None, filename=None, metadata=None, **kwargs):
        if data is not None and isinstance(data, str) and filename is None and url is None \
                and (data.startswith(("http://", "https://"))):
            url, data = data, None
        self.data, self.url, self.filename, self.metadata = data, url, filename, metadata or {}
        if filename is not None and data is None:
            with open(filename, "rb") as f:
                raw = f.read()
            try:
                self.data = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.data = raw

    def _fairing_text(self):
        if self.data is None and self.url:
            return self.url
        return self.data if isinstance(self.data, str) else repr(self.data)

    def __repr__(self):
        return "<IPython.core.display.%s object>" % type(self).__name__


class _TagStripper(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_text(html):
    """The text of an HTML fragment: tags dropped, entities decoded, blank lines removed."""
    p = _TagStripper()
    p.feed(html)
    p.close()
    lines = [" ".join(line.split()) for line in "".join(p.parts).splitlines()]
    return "\n".join(line for line in lines if line)


class HTML(DisplayObject):
    def _fairing_text(self):
        return html_text(super()._fairing_text())


class Markdown(DisplayObject):
    pass


class Latex(DisplayObject):
    pass


class Math(DisplayObject):
    def _fairing_text(self):
        return "$%s$" % str(self.data).strip("$")


class SVG(DisplayObject):
    def _fairing_text(self):
        return "<SVG image>"


class Javascript(DisplayObject):
    def _fairing_text(self):
        return "<Javascript: not run outside a browser>"


class Pretty(DisplayObject):
    pass


class Code(DisplayObject):
    def __init__(self, data=None, url=None, filename=None, language=None):
        super().__init__(data=data, url=url, filename=filename)


class JSON(DisplayObject):
    def __init__(self, data=None, url=None, filename=None, expanded=False, metadata=None, root="root", **kwargs):
        super().__init__(data=data, url=url, filename=filename, metadata=metadata)
        if isinstance(self.data, str):
            try:
                self.data = json.loads(self.data)
            except ValueError:
                pass

    def _fairing_text(self):
        return json.dumps(self.data, indent=1, sort_keys=True, default=str)


class Image(DisplayObject):
    def __init__(self, data=None, url=None, filename=None, format=None, embed=None, width=None, height=None,
                 retina=False, unconfined=False, metadata=None, alt=None):
        if isinstance(data, str) and filename is None and url is None and os.path.isfile(data):
            filename, data = data, None
        self.format = format or (os.path.splitext(filename or url or "")[1].lstrip(".").lower() or None)
        self.width, self.height, self.alt = width, height, alt
        DisplayObject.__init__(self, data=None if filename else data, url=url, metadata=metadata)
        self.filename = filename
        if filename is not None:
            with open(filename, "rb") as f:
                self.data = f.read()
        if isinstance(self.data, str):  # base64 text
            try:
                self.data = base64.b64decode(self.data)
            except ValueError:
                pass

    def _fairing_text(self):
        what = self.filename or self.url or (self.format or "image")
        size = " (%d bytes)" % len(self.data) if isinstance(self.data, (bytes, bytearray)) else ""
        return "<Image: %s%s>" % (what, size)


class FileLink(DisplayObject):
    def __init__(self, path, url_prefix="", result_html_prefix="", result_html_suffix="<br>"):
        self.path = path

    def _fairing_text(self):
        return self.path


class IFrame(DisplayObject):
    def __init__(self, src, width, height, extras=None, **kwargs):
        self.src = src

    def _fairing_text(self):
        return "<IFrame: %s>" % self.src


def YouTubeVideo(id, width=400, height=300, **kwargs):
    return IFrame("https://www.youtube.com/embed/%s" % id, width, height)


display_html = _display_as(HTML)
display_markdown = _display_as(Markdown)
display_latex = _display_as(Latex)
display_json = _display_as(JSON)
display_pretty = _display_as(Pretty)
display_svg = _display_as(SVG)
display_javascript = _display_as(Javascript)
