"""MkDocs hooks for editlab's docs: maths to MathML at build time, heading ids as nbdev's doc links spell them.

pymdownx.arithmatex (generic mode) marks `$...$` and `$$...$$` without touching the TeX; here each is replaced by
MathML (latex2mathml), which browsers render natively, so a page needs no script, font or CDN to show its maths.
Headings keep their maths in the table of contents, and a title's maths becomes the text of its MathML.
"""
import html, re
from latex2mathml.converter import convert

_re_inline = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.S)
_re_block = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.S)
_re_toc = re.compile(r'\\\((.+?)\\\)', re.S)


def mathml(tex:str, display:bool=False)->str:
    "MathML for a TeX formula (HTML entities in `tex` decoded first)"
    return convert(html.unescape(tex).strip(), display='block' if display else 'inline')

def tex_text(tex:str)->str:
    "A formula as plain text: the characters of its MathML (`\\mathbb{E}[kk^\\top]` -> `𝔼[kk⊤]`)"
    return html.unescape(re.sub(r'<[^>]+>', '', mathml(tex)))

def slugify(value:str, separator:str='-')->str:
    "Heading ids as nbdev/Quarto spell them: lower case, word characters, dots and dashes kept (`Artifact.apply`)"
    v = re.sub(r'[^\w\s.-]', '', html.unescape(value)).strip().lower()
    return re.sub(r'[\s]+', separator, v)

def _toc(items):
    for it in items:
        it.title = _re_toc.sub(lambda m: mathml(m.group(1)), it.title)
        _toc(it.children)

def on_page_content(html_, page, config, files):
    html_ = _re_block.sub(lambda m: mathml(m.group(1), display=True), html_)
    html_ = _re_inline.sub(lambda m: mathml(m.group(1)), html_)
    _toc(page.toc)
    return html_
