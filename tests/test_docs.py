"""The offline docs site (editlab.docs, from nbs/90_docs.ipynb): build every notebook's page once, then check each page.

Every notebook under nbs/ gets a page carrying its title (its first `# ` heading) and, when the notebook exports
functions or classes, their rendered `show_doc` signatures; index.html (when nbs/index.ipynb exists) links every page.
"""
import ast, html, json, os, re
from pathlib import Path
import pytest
from editlab.docs import build_site, find_notebooks, page_name

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = find_notebooks(NBS)
_re_export = re.compile(r'^\s*#\|\s*exports?\s*$', re.MULTILINE)
_re_hide = re.compile(r'^\s*#\|\s*hide\s*$', re.MULTILINE)


def _cells(nb:Path): return json.loads(nb.read_text(encoding='utf-8'))['cells']
def _src(cell): return ''.join(cell['source'])
def _text(page:str): return html.unescape(re.sub(r'<[^>]+>', '', page))


def nb_title(nb:Path):
    "The notebook's first `# ` heading (its page title), or None"
    for c in _cells(nb):
        if c['cell_type'] == 'markdown' and (m := re.search(r'^#\s+(\S.*?)\s*$', _src(c), re.MULTILINE)): return m.group(1)


def exported_names(nb:Path):
    "Public functions and classes defined at top level in the notebook's `#| export(s)` cells (nbdev documents these)"
    names = []
    for c in _cells(nb):
        s = _src(c)
        if c['cell_type'] != 'code' or not _re_export.search(s) or _re_hide.search(s): continue
        code = '\n'.join(l for l in s.splitlines() if not l.lstrip().startswith(('%', '!')))
        names += [n.name for n in ast.parse(code).body
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith('_')]
    return names


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    written = build_site(out, nbs_path=NBS, quiet=True)
    return out, written


def test_every_notebook_has_a_page(site):
    out, written = site
    assert NOTEBOOKS, 'no notebooks found'
    pages = {page_name(nb, NBS) for nb in NOTEBOOKS}
    assert pages <= {p.relative_to(out).as_posix() for p in written}
    for p in pages: assert (out/p).is_file(), p


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_page(site, nb):
    out, _ = site
    page = (out/page_name(nb, NBS)).read_text(encoding='utf-8')
    text = _text(page)
    title = nb_title(nb)
    if title is not None:
        plain = re.sub(r'`([^`]+)`', r'\1', title)
        assert plain in _text(re.search(r'<h1 class="title">(.*?)</h1>', page).group(1)), f'{nb.name}: title {title!r} missing'
        assert f'<title>{html.escape(plain)}' in page
    names = exported_names(nb)
    if names:   # show_doc output: a heading per exported name, and rendered signatures
        # a `@patch`ed method is headed `Class.name`
        headed = [n for n in names if re.search(rf'<h[34] id="[^"]*">(?:\w+\.)?{re.escape(n)}<a class="anchor-link"', page)]
        assert set(headed) == set(names), f'{nb.name}: no show_doc for {sorted(set(names) - set(headed))}'
        signed = [n for n in names if re.search(rf'(def|class) {re.escape(n)}\b', text)]
        assert signed, f'{nb.name}: no rendered signature of {names}'
        assert 'class="cell code showdoc"' in page
    for code in re.findall(r'<div class="input">.*?<pre>(.*?)</pre>', page, re.DOTALL):   # nbdev directives are gone
        assert not _text(code).lstrip().startswith('#|'), f'{nb.name}: directive left in {_text(code)[:80]!r}'
    here = Path(page_name(nb, NBS)).parent
    for other in NOTEBOOKS:   # the sidebar links every page
        assert f'href="{os.path.relpath(page_name(other, NBS), here)}"' in page, f'{nb.name}: no link to {other.name}'


@pytest.mark.skipif(not (NBS/'index.ipynb').exists(), reason='nbs/index.ipynb does not exist yet')
def test_index_links_every_page(site):
    out, _ = site
    index = (out/'index.html').read_text(encoding='utf-8')
    hrefs = set(re.findall(r'href="([^"#]+)"', index))
    missing = [page_name(nb, NBS) for nb in NOTEBOOKS if page_name(nb, NBS) != 'index.html' and page_name(nb, NBS) not in hrefs]
    assert not missing, f'index.html does not link {missing}'
