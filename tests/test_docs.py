"""The docs site (docs/build_docs.py: nbdev's processors, Markdown pages, MkDocs Material, maths as MathML at build time).

The site is built once per run into a temporary folder (about two minutes on two cores); `EDITLAB_DOCS_SITE=<folder>`
checks an already built site instead. Each check reads the generated HTML the way a reader's browser would get it:
every link inside the site resolves (file and anchor), nothing links a private name, no page loads anything from
another host, maths is MathML with no TeX left in the text, every notebook has a page in its sidebar family,
outputs and plots are on the pages, and search covers every page.
"""
import html, json, os, re, sys
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
sys.path.insert(0, str(ROOT/'docs'))
import build_docs as bd   # noqa: E402

NOTEBOOKS = bd.find_notebooks(NBS)
SETTINGS = bd.read_settings()


def _html_page(nb:Path)->str: return bd.page_name(nb, NBS)[:-len('.md')] + '.html'
def _cells(nb:Path): return json.loads(nb.read_text(encoding='utf-8'))['cells']
def _src(c): return ''.join(c['source'])
def _text(page:str)->str:
    "A page's visible text outside code, pre, maths, scripts and the search form"
    page = re.sub(r'<(script|style|pre|code|math)\b.*?</\1>', ' ', page, flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', page))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    if os.environ.get('EDITLAB_DOCS_SITE'): return Path(os.environ['EDITLAB_DOCS_SITE'])
    out = tmp_path_factory.mktemp('site')
    bd.build_site(out, quiet=True)
    return out

@pytest.fixture(scope='module')
def pages(site): return {p.relative_to(site).as_posix(): p.read_text(encoding='utf-8') for p in site.rglob('*.html')}


# --- pieces, no build -------------------------------------------------------------------------------------------
def test_cell_options():
    opts, src = bd.cell_options('#| echo: false\n#| output: asis\n#| export\nshow_doc(f)')
    assert opts == {'echo': False, 'output': 'asis'} and src == 'show_doc(f)'

def test_fence_survives_backticks():
    assert bd.fence('a\n```\nb', 'text').startswith('````text\n') and bd.fence('x').endswith('\n```')

def test_links_made_relative_private_dropped(tmp_path):
    w = bd.PageWriter('studies/x.md', tmp_path, 'https://h.io/lib', {'32_rome.ipynb': 'rome.md', 'studies/x.ipynb': 'studies/x.md'})
    md = w.links('[`rome`](https://h.io/lib/rome.html#rome) [`_corpus`](https://h.io/lib/editors.html#_corpus) '
                 '[ROME](../32_rome.ipynb#sec) [ext](https://example.org/a.html) `[k](https://h.io/lib/a.html#_b)`\n'
                 '```\n[c](https://h.io/lib/rome.html#rome)\n```')
    assert '(../rome.md#rome)' in md and '[`_corpus`]' not in md and '`_corpus`' in md
    assert '(../rome.md#sec)' in md and '(https://example.org/a.html)' in md
    assert '```\n[c](https://h.io/lib/rome.html#rome)\n```' in md   # fenced code untouched

def test_every_notebook_has_a_family():
    assert NOTEBOOKS
    more = [nb.name for nb in NOTEBOOKS if bd.family(nb, NBS) == 'More']
    assert not more, f'notebooks outside every sidebar family (add their number range to FAMILIES): {more}'
    assert all(bd.family(nb, NBS) == bd.STUDIES for nb in NOTEBOOKS if nb.parent.name == 'studies')

def test_slugify_matches_nbdev_links():
    assert bd_hooks().slugify('Artifact.apply') == 'artifact.apply' and bd_hooks().slugify('stats_key') == 'stats_key'

def bd_hooks():
    import hooks
    return hooks

def test_mathml_text():
    h = bd_hooks()
    assert h.mathml(r'\mathbb{E}[kk^\top]').startswith('<math') and h.tex_text(r'\mathbb{E}[kk^\top]') == '𝔼[kk⊤]'


# --- the built site ---------------------------------------------------------------------------------------------
def test_every_notebook_has_a_page(site):
    missing = [nb.name for nb in NOTEBOOKS if not (site/_html_page(nb)).is_file()]
    assert not missing, f'no page for {missing}'

def test_sidebar_grouped_by_family(pages):
    index = pages['index.html']
    labels = [html.unescape(re.sub(r'<[^>]+>', '', t)).strip() for t in re.findall(r'<label class="md-nav__link"[^>]*>(.*?)</label>', index, re.S)]
    want = [f for f in ['Core'] + [f for f, _ in bd.FAMILIES[1:]] + [bd.STUDIES] if any(bd.family(nb, NBS) == f for nb in NOTEBOOKS)]
    assert [l for l in labels if l in want] == want, labels
    for nb in NOTEBOOKS:   # every page is in the sidebar of every page (checked on the index)
        assert f'href="{_html_page(nb)}"' in index or (nb.name == 'index.ipynb'), f'sidebar lacks {nb.name}'

def _links(page:str): return re.findall(r'<(?:a|link|img|script)\b[^>]*?\b(?:href|src)="([^"]*)"', page)

def test_no_broken_internal_links(site, pages):
    ids = {name: set(re.findall(r'\bid="([^"]+)"', text)) for name, text in pages.items()}
    broken = []
    for name, text in pages.items():
        for url in _links(text):
            u = urlsplit(html.unescape(url))
            if u.scheme or u.netloc or url.startswith(('mailto:', 'data:', 'javascript:')): continue
            if u.path.startswith('/'):   # 404.html links from the site's root (settings.ini's doc_baseurl), as a server sees it
                base = '/' + SETTINGS.get('doc_baseurl', '').strip('/') + '/'
                assert u.path.startswith(base), f'{name}: {url} is outside the site'
                u = u._replace(path=u.path[len(base):] or 'index.html'); name_dir = Path('.')
            else: name_dir = Path(name).parent
            target = (name_dir/unquote(u.path)).as_posix() if u.path else name
            target = os.path.normpath(target).replace(os.sep, '/')
            if u.path and not (site/target).exists(): broken.append(f'{name}: {url}'); continue
            if u.fragment and target.endswith('.html') and unquote(u.fragment) not in ids.get(target, ()):
                broken.append(f'{name}: {url} (no such anchor)')
    assert not broken, f'{len(broken)} broken internal links:\n' + '\n'.join(sorted(set(broken))[:40])

def test_no_links_to_private_names(pages):
    bad = []
    for name, text in pages.items():
        for url in _links(text):
            u = urlsplit(html.unescape(url))
            parts = re.split(r'[./]', u.fragment) + [Path(u.path).name]
            if any(p.startswith('_') and not p.startswith('__') for p in parts if p) or re.search(r'(^|\.)__\w+__$', u.fragment):
                bad.append(f'{name}: {url}')
    assert not bad, '\n'.join(bad[:40])

def test_nothing_loaded_from_another_host(site, pages):
    for name, text in pages.items():
        tags = [t for t in re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*>', text) if not re.search(r'rel="(canonical|alternate)"', t)]
        ext = [u for t in tags for u in re.findall(r'\b(?:src|href)="((?:https?:)?//[^"/]*)', t)]
        assert not ext, f'{name} loads from {ext}'
    for css in site.rglob('*.css'):
        assert not re.search(r'url\(\s*["\']?(https?:)?//', css.read_text(encoding='utf-8')), f'{css.name} loads from another host'

def test_maths_rendered_at_build_time(pages):
    with_tex = [nb for nb in NOTEBOOKS if any(c['cell_type'] == 'markdown' and re.search(r'\$[^$\s][^$]*\$', re.sub(r'`[^`]*`', '', _src(c)))
                                              for c in _cells(nb))]
    assert with_tex
    for nb in with_tex:
        page = pages[_html_page(nb)]
        assert '<math' in page, f'{nb.name}: no MathML'
        left = re.findall(r'\$\$|\$[^$\s][^$]{0,300}?\$|\\\(.{1,80}?\\\)|\\\[.{1,80}?\\\]', _text(page), re.S)
        assert not left, f'{nb.name}: TeX left in the text: {left[:5]}'
        assert 'class="arithmatex"' not in page

def test_search_covers_every_page(site):
    found = list(site.rglob('search_index.js')) + list(site.rglob('search_index.json'))
    assert found, 'no search index'
    index = found[0].read_text(encoding='utf-8')
    missing = [nb.name for nb in NOTEBOOKS if f'"location":"{_html_page(nb)}' not in index.replace('": "', '":"')]
    assert not missing, f'search index lacks {missing}'

def test_outputs_and_plots_on_pages(pages):
    for nb in NOTEBOOKS:
        page = pages[_html_page(nb)]
        n_img = sum('image/png' in o.get('data', {}) for c in _cells(nb) if c['cell_type'] == 'code' for o in c.get('outputs', []))
        assert page.count('class="nb-image"') >= n_img, f'{nb.name}: {n_img} plots in the notebook, fewer on its page'
        if any(c['cell_type'] == 'code' and c.get('outputs') and not _src(c).lstrip().startswith('#|') for c in _cells(nb)):
            assert 'class="nb-output' in page or 'class="nb-image"' in page, f'{nb.name}: no output shown'

def test_source_links_and_no_directives(pages):
    base = f"{SETTINGS['git_url'].rstrip('/')}/blob/{SETTINGS.get('branch', 'main')}/"
    for nb in NOTEBOOKS:
        page = pages[_html_page(nb)]
        assert f'href="{base}{nb.relative_to(ROOT).as_posix()}"' in page, f'{nb.name}: no source link'
        for code in re.findall(r'<pre\b[^>]*>(.*?)</pre>', page, re.S):
            assert not html.unescape(re.sub(r'<[^>]+>', '', code)).lstrip().startswith('#|'), f'{nb.name}: directive shown'

def test_show_doc_for_exported_names(pages):
    "Every public function or class an `#| export` cell defines has its heading (anchor) on the page"
    import ast
    for nb in NOTEBOOKS:
        names = []
        for c in _cells(nb):
            s = _src(c)
            if c['cell_type'] != 'code' or not re.search(r'^\s*#\|\s*exports?\s*$', s, re.M): continue
            code = '\n'.join(l for l in s.splitlines() if not l.lstrip().startswith(('%', '!')))
            names += [n.name for n in ast.parse(code).body
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith('_')]
        page = pages[_html_page(nb)]
        missing = [n for n in names if not re.search(rf'id="(\w+\.)?{re.escape(n.lower())}"', page)]
        assert not missing, f'{nb.name}: no show_doc for {missing}'
