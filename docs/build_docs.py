"""Build editlab's docs site offline: nbdev's doc processors on every notebook, Markdown pages, then MkDocs (Material theme).

    python docs/build_docs.py                 # the whole site into _site/ (open _site/index.html, or serve it)
    python docs/build_docs.py --only 32_rome  # just some pages (the sidebar still lists all)
    python docs/build_docs.py --readme        # (re)write README.md from nbs/index.ipynb, executed

Not part of the importable `editlab` package: it needs `mkdocs-material` and `latex2mathml` (dev requirements).
Maths is converted to MathML here, at build time (docs/hooks.py), so pages load no script or font from another host.
"""
from __future__ import annotations
import argparse, ast, base64, html, json, logging, multiprocessing, os, re, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Sidebar families, by notebook number; studies by folder. A notebook no rule names lands in "More", never nowhere.
FAMILIES = [('Core', [(0, 9), (95, 95)]),
            ('Task vectors and merging', [(10, 19)]),
            ('Steering', [(20, 29)]),
            ('Knowledge location and editing', [(30, 34), (39, 39), (42, 44)]),
            ('Editors beside the weights', [(35, 38)]),
            ('Learned editors', [(45, 49)]),
            ('LoFiT', [(40, 41)]),
            ('Instruction vectors', [(50, 59)])]
STUDIES = 'Studies'


# --- which notebooks, which pages ------------------------------------------------------------------------------
def read_settings(root:Path=ROOT)->dict:
    "settings.ini's [DEFAULT] section"
    import configparser
    cp = configparser.ConfigParser(); cp.read(root/'settings.ini')
    return dict(cp['DEFAULT'])

def find_notebooks(nbs:Path)->list[Path]:
    "Every notebook under `nbs`, recursively, skipping names that start with `_` or `.`; index first"
    found = [p for p in nbs.rglob('*.ipynb') if not any(part[0] in '_.' for part in p.relative_to(nbs).parts)]
    return sorted(found, key=lambda p: (p.relative_to(nbs).as_posix() != 'index.ipynb', p.relative_to(nbs).parts))

def page_name(nb:Path, nbs:Path)->str:
    "Markdown page of a notebook, named as nbdev/Quarto name pages: `00_models.ipynb` -> `models.md`"
    rel = nb.relative_to(nbs)
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.md').as_posix()

def family(nb:Path, nbs:Path)->str:
    "Sidebar section of a notebook"
    rel = nb.relative_to(nbs)
    if rel.parts[0] == 'studies': return STUDIES
    if rel.as_posix() == 'index.ipynb': return 'Core'
    if (m := re.match(r'(\d+)_', rel.name)):
        n = int(m.group(1))
        for name, ranges in FAMILIES:
            if any(a <= n <= b for a, b in ranges): return name
    return 'More'

def nb_title(nb:Path)->str:
    "A notebook's first `# ` heading, else its file name"
    for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        if c['cell_type'] == 'markdown' and (m := re.search(r'^#\s+(\S.*?)\s*$', ''.join(c['source']), re.M)): return m.group(1)
    return nb.stem


def nb_description(nb:Path)->str|None:
    "The `> ...` summary under a notebook's title, all its lines (nbdev's front matter keeps only the first)"
    for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
        if c['cell_type'] != 'markdown': continue
        if (m := re.search(r'^#\s+\S.*\n+((?:>.*(?:\n|$))+)', ''.join(c['source']), re.M)):
            return ' '.join(re.sub(r'^>\s?', '', l).strip() for l in m.group(1).splitlines()).strip()
        return None


# --- nbdev's doc processors ------------------------------------------------------------------------------------
def _is_import(t)->bool: return isinstance(t, (ast.Import, ast.ImportFrom))
def _is_show_doc(t)->bool:
    return isinstance(t, ast.Expr) and isinstance(t.value, ast.Call) and getattr(t.value.func, 'id', None) == 'show_doc'

def mixed_import_cell(cell)->bool:
    "A code cell nbdev's `exec_show_docs` would run only because it holds imports among other (possibly slow) code"
    if cell.get('cell_type') != 'code' or not cell.get('source'): return False
    if set(getattr(cell, 'directives_', None) or {}) & {'export', 'exports', 'exporti', 'exec_doc'}: return False
    try: body = ast.parse(cell['source']).body
    except SyntaxError: return False
    return any(map(_is_import, body)) and not all(_is_import(t) or _is_show_doc(t) for t in body)

def _filter():
    "nbdev's `FilterDefaults`, whose `exec_show_docs` skips example cells that merely contain an import"
    from nbdev.processors import FilterDefaults, exec_show_docs
    from fastcore.foundation import L
    class ShowDocsOnly(exec_show_docs):
        def __call__(self, cell):
            if not mixed_import_cell(cell): return super().__call__(cell)
    class DocsFilter(FilterDefaults):
        def procs(self): return L(super().procs()).map(lambda p: ShowDocsOnly if p is exec_show_docs else p)
    return DocsFilter

def _process_one(args):
    "Worker: run nbdev's processors on one notebook (as `nbdev_docs` does), write the processed notebook"
    src, dst, root = args
    os.chdir(root); os.environ['IN_TEST'] = '1'
    os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MPLBACKEND', 'Agg')
    import warnings; warnings.filterwarnings('ignore', 'Found cells containing imports')   # export cells importing inside functions
    from execnb.nbio import read_nb, write_nb
    if not Path(src).exists(): return None   # moved or deleted while the site was building
    nb = read_nb(src); _filter()()(nb); write_nb(nb, dst)
    return dst

CACHE = ROOT/'_proc'/'docs-cache'   # processed notebooks, keyed by what they depend on (`_proc/` is git-ignored)

def cache_key(nb:Path)->str:
    "Hash of what nbdev's processors read for `nb`: the notebook, the module it exports to, the link index, this script"
    import hashlib
    h = hashlib.sha256(nb.read_bytes())
    if (m := re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text(encoding='utf-8'))):
        mod = ROOT/'editlab'/(m.group(1).replace('.', '/') + '.py')
        if mod.exists(): h.update(mod.read_bytes())
    for f in (ROOT/'editlab'/'_modidx.py', ROOT/'settings.ini', Path(__file__)):
        if f.exists(): h.update(f.read_bytes())
    return h.hexdigest()[:32]

def process_notebooks(nbs:list[Path], dest:Path, n_workers:int=2, cache:bool=True)->list[Path]:
    "nbdev's doc processors on each notebook, in spawned workers; the processed notebooks' paths (None: notebook gone)"
    outs = [dest/f'{i:03d}.ipynb' for i in range(len(nbs))]
    keys = [cache_key(p) if cache and p.exists() else None for p in nbs]
    todo = []
    for i, (p, k) in enumerate(zip(nbs, keys)):
        if k and (CACHE/f'{k}.ipynb').exists(): shutil.copy(CACHE/f'{k}.ipynb', outs[i])
        else: todo.append(i)
    ctx = multiprocessing.get_context('spawn')
    errors = []
    if todo:
        with ProcessPoolExecutor(max(1, min(n_workers, len(todo))), mp_context=ctx) as ex:
            futs = {i: ex.submit(_process_one, (nbs[i].resolve(), outs[i], ROOT)) for i in todo}
            for i, f in futs.items():
                try:
                    if f.result() is None: outs[i] = None; print(f'skipped {nbs[i].relative_to(ROOT)}: no longer there', file=sys.stderr)
                    elif keys[i]: CACHE.mkdir(parents=True, exist_ok=True); shutil.copy(outs[i], CACHE/f'{keys[i]}.ipynb')
                except Exception as e: errors.append(f'{nbs[i].relative_to(ROOT)}: {type(e).__name__}: {e}')
    if errors: raise RuntimeError(f"nbdev's doc processors failed on {len(errors)} notebook(s):\n" + '\n'.join(errors))
    return outs


# --- processed notebook -> Markdown ----------------------------------------------------------------------------
_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s?(.*)$')
_re_dir = re.compile(r'^\s*#\|')

def cell_options(source:str)->tuple[dict, str]:
    "Split Quarto's `#| key: value` cell options off a code cell: (options, the rest); other `#|` lines dropped"
    opts, rest = {}, []
    for line in source.splitlines():
        if (m := _re_opt.match(line)):
            try: opts[m.group(1)] = yaml.safe_load(m.group(2))
            except yaml.YAMLError: opts[m.group(1)] = m.group(2).strip()
        elif not _re_dir.match(line): rest.append(line)
    return opts, '\n'.join(rest).strip('\n')

def _text(x)->str: return ''.join(x) if isinstance(x, list) else str(x)

def fence(body:str, lang:str='')->str:
    "A fenced block that no run of backticks inside `body` can close"
    n = max([3] + [len(m) + 1 for m in re.findall(r'`{3,}', body)])
    return f"{'`'*n}{lang}\n{body.rstrip()}\n{'`'*n}"

_re_ansi = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

class PageWriter:
    "Markdown for one processed notebook: cells, outputs (images written beside the page), links made relative"
    def __init__(self, page:str, out:Path, site_url:str, nb_pages:dict):
        self.page, self.out, self.site_url, self.nb_pages = page, out, site_url.rstrip('/'), nb_pages
        self.stem = Path(page).with_suffix('').as_posix()
        self.n_img = 0

    def rel(self, target:str)->str: return os.path.relpath(target, os.path.dirname(self.page) or '.').replace(os.sep, '/')

    def link(self, url:str)->str|None:
        "A link target made relative to this page: nbdev's absolute doc links, links to notebooks; None to drop it"
        u = url
        if self.site_url and u.startswith(self.site_url + '/'):
            path, _, anchor = u[len(self.site_url) + 1:].partition('#')
            if any(part.startswith('_') and not part.startswith('__') for part in re.split(r'[./]', anchor)): return None
            if anchor.split('.')[-1].startswith('__'): return None   # dunder methods have no show_doc
            return self.rel(re.sub(r'\.html$', '.md', path)) + (f'#{anchor}' if anchor else '')
        path, _, anchor = u.partition('#')
        if not re.match(r'^[a-z]+:', u) and path.endswith('.ipynb'):
            here = (Path(self.page).parent/path).as_posix()
            key = os.path.normpath(here).replace(os.sep, '/')
            if key in self.nb_pages: return self.rel(self.nb_pages[key]) + (f'#{anchor}' if anchor else '')
        return url

    def links(self, md:str)->str:
        "Rewrite every markdown link `[text](url)` outside code; a dropped link keeps its text"
        def sub(m):
            text, url, attrs = m.group(1), m.group(2), m.group(3) or ''
            new = self.link(url)
            return text[1:-1] if new is None else f'{text}({new}){attrs}'
        return _outside_code(md, lambda s: re.sub(r'(\[[^\]\n]*\])\(([^)\s]+)\)(\{[^}\n]*\})?', sub, s), spans=False)

    def image(self, data:str, ext:str)->str:
        self.n_img += 1
        name = f'{Path(self.stem).name}_files/output_{self.n_img}.{ext}'
        dst = self.out/Path(self.page).parent/name; dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(base64.b64decode(data) if ext != 'svg' else data.encode())
        return f'![output]({name}){{ .nb-image }}'

    def output(self, o:dict)->str:
        "Markdown for one output; text outputs are marked `nb-output` so the page sets them apart from code"
        def text(t, cls=''): return f'<div class="nb-output nb-text{cls}" markdown="1">\n\n{fence(_re_ansi.sub("", t), "text")}\n\n</div>'
        kind = o.get('output_type')
        if kind == 'stream': return text(_text(o.get('text', '')), ' nb-stderr' if o.get('name') == 'stderr' else '')
        if kind == 'error': return text('\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"]), ' nb-error')
        d = o.get('data', {})
        if 'image/png' in d: return self.image(_text(d['image/png']).strip(), 'png')
        if 'image/jpeg' in d: return self.image(_text(d['image/jpeg']).strip(), 'jpg')
        if 'image/svg+xml' in d: return self.image(_text(d['image/svg+xml']), 'svg')
        if 'text/markdown' in d: return self.links(_text(d['text/markdown']))
        if 'text/html' in d: return f'<div class="nb-output" markdown="0">\n{_text(d["text/html"]).strip()}\n</div>'
        if 'text/latex' in d: return _text(d['text/latex'])
        if 'text/plain' in d: return text(_text(d['text/plain']))
        return ''

    def cell(self, c:dict)->str:
        src = _text(c.get('source', ''))
        if c['cell_type'] == 'markdown': return self.links(list_breaks(display_maths(src)))
        if c['cell_type'] != 'code': return ''
        opts, src = cell_options(src)
        if opts.get('include') is False: return ''
        parts = []
        if src.strip() and opts.get('echo', True) is not False:
            code = fence(src, 'python')
            if (fold := opts.get('code-fold')) in (True, 'show'):
                summary = str(opts.get('code-summary', 'Code')).replace('"', "'")
                code = f'???{"+" if fold == "show" else ""} code "{summary}"\n\n' + '\n'.join('    ' + l if l else l for l in code.splitlines())
            parts.append(code)
        if opts.get('output', True) is not False:
            parts += [self.output(o) for o in c.get('outputs', [])]
        return '\n\n'.join(p for p in parts if p)

def display_maths(md:str)->str:
    "`$$...$$` on its own lines, as Jupyter shows it even inside a paragraph (arithmatex wants display maths as a block)"
    return _outside_code(md, lambda t: re.sub(r'[ \t]*\$\$(.+?)\$\$[ \t]*', lambda m: f'\n\n$$\n{m.group(1).strip()}\n$$\n\n', t, flags=re.S))

_re_item = re.compile(r'^\s*(?:[-*+]|\d+[.)])\s+\S')

def list_breaks(md:str)->str:
    "A blank line before a list that follows a paragraph line: Jupyter (CommonMark) starts a list there, Python-Markdown not"
    def f(t):
        lines = t.split('\n')
        out, maths = lines[:1], lines[0].strip() == '$$'
        for prev, line in zip(lines, lines[1:]):
            if line.strip() == '$$': maths = not maths   # display_maths put every `$$` on its own line
            if not maths and _re_item.match(line) and not line.startswith(' ') and prev.strip() and not prev.startswith((' ', '\t', '|', '>')) \
               and not _re_item.match(prev): out.append('')
            out.append(line)
        return '\n'.join(out)
    return _outside_code(md, f, spans=False)

def front_matter(nb:dict)->dict:
    "The YAML front matter nbdev's `FrontmatterProc` leaves in the first raw cell"
    for c in nb['cells']:
        if c['cell_type'] == 'raw' and (m := re.match(r'^---\s*\n(.*?)\n---', _text(c['source']).strip(), re.S)):
            try: return yaml.safe_load(m.group(1)) or {}
            except yaml.YAMLError: return {}
    return {}

def _outside_code(md:str, f, spans:bool=True)->str:
    "Apply `f` to the parts of markdown outside fenced blocks (and outside code spans, unless `spans` is False)"
    out, fence_, buf = [], None, []
    def flush():
        if buf:
            s = '\n'.join(buf); parts = re.split(r'(`+[^`\n]*?`+)', s) if spans else [s]
            out.append(''.join(p if i % 2 else f(p) for i, p in enumerate(parts))); buf.clear()
    for line in md.split('\n'):
        s = line.lstrip()
        if fence_ is None and (m := re.match(r'(`{3,}|~{3,})', s)): flush(); fence_ = m.group(1); out.append(line); continue
        if fence_ is not None:
            out.append(line)
            if s.startswith(fence_) and not s[len(fence_):].strip(): fence_ = None
            continue
        buf.append(line)
    flush()
    return '\n'.join(out)

def notebook_markdown(proc:Path, nb:Path, page:str, out:Path, cfg:dict, nb_pages:dict)->str:
    "One page of Markdown from a processed notebook: title, description, source link, then the cells"
    d = json.loads(proc.read_text(encoding='utf-8'))
    fm = front_matter(d)
    w = PageWriter(page, out, cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/'), nb_pages)
    rel = nb.relative_to(ROOT).as_posix()
    src_url = f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}/{rel}"
    head = [f"# {fm.get('title') or nb_title(nb)}"]
    if (desc := nb_description(nb) or fm.get('description')): head.append(f"> {w.links(str(desc))}")
    head.append(f'<p class="nb-source"><a href="{html.escape(src_url)}">{html.escape(rel)}</a> on GitHub</p>')
    body = [w.cell(c) for c in d['cells'] if c['cell_type'] != 'raw']
    return '\n\n'.join(head + [b for b in body if b.strip()]) + '\n'


def page_anchors(md:str)->set:
    "Heading ids MkDocs will give a page's headings (explicit `{#id}` or hooks.slugify of the heading's text)"
    from hooks import slugify
    ids = set()
    def heads(part):
        for m in re.finditer(r'^#{1,6}\s+(.*?)\s*$', part, re.M):
            t = m.group(1)
            if (e := re.search(r'\{[^}]*#([\w.:-]+)[^}]*\}\s*$', t)): ids.add(e.group(1)); continue
            t = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', t).replace('`', '').replace('*', '')
            ids.add(slugify(t))
        return part
    _outside_code(md, heads, spans=False)
    return ids

def fix_anchors(src:Path, pages:list[str]):
    "Point a link at a heading that is not there (nbdev links every name of its index) at the nearest one that is: "
    "`artifact.save` -> `artifact`, else the page's top"
    anchors = {p: page_anchors((src/p).read_text(encoding='utf-8')) for p in pages}
    for p in pages:
        def sub(m):
            page, a = m.group(1) or '', m.group(2)
            target = os.path.normpath((Path(p).parent/page).as_posix()).replace(os.sep, '/') if page else p
            if target not in anchors or a in anchors[target]: return m.group(0)
            while a not in anchors[target] and '.' in a: a = a.rsplit('.', 1)[0]
            if a in anchors[target]: return f']({page}#{a})'
            return f']({page})' if page else m.group(0)
        md = (src/p).read_text(encoding='utf-8')
        md = _outside_code(md, lambda t: re.sub(r'\]\(([^)\s#]*\.md)?#([^)\s]+)\)', sub, t), spans=False)
        (src/p).write_text(md, encoding='utf-8')


# --- the site --------------------------------------------------------------------------------------------------
def plain_title(t:str)->str:
    "A title as plain text (nav, <title>): code spans unquoted, TeX as the text of its MathML"
    sys.path.insert(0, str(DOCS))
    from hooks import tex_text
    t = re.sub(r'`([^`]+)`', r'\1', t)
    return re.sub(r'\$([^$]+)\$', lambda m: tex_text(m.group(1)), t)

def site_settings(cfg:dict, src:Path, out:Path, nav:list)->dict:
    "What docs/mkdocs.yml leaves to the build: pages, folders, names and addresses from settings.ini"
    return {'site_name': cfg.get('title', 'editlab'), 'site_description': cfg.get('description', ''),
            'site_url': cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/') + '/',
            'docs_dir': str(src), 'site_dir': str(out), 'nav': nav,
            'extra': {'generator': False, 'social': [{'icon': 'fontawesome/brands/github', 'link': cfg['git_url']}],
                      'polyfills': ['iframe-worker-shim.js']}}   # ours (a worker stand-in for file:// pages); without a polyfill named so, the offline plugin would load one from unpkg.com

def write_markdown(nbs_path:Path, src:Path, only=None, n_workers:int=2, quiet:bool=False, cache:bool=True)->tuple[list, list]:
    "Process the notebooks and write their Markdown pages into `src`; (nav, pages written)"
    cfg = read_settings()
    nbs = find_notebooks(nbs_path)
    nb_pages = {p.relative_to(nbs_path).as_posix(): page_name(p, nbs_path) for p in nbs}
    todo = nbs if not only else [p for p in nbs if any(o in (p.name, p.stem, p.relative_to(nbs_path).as_posix()) for o in only)]
    if only and not todo: raise SystemExit(f'no notebook under {nbs_path} matches {only}')
    groups: dict = {}
    for p in nbs: groups.setdefault(family(p, nbs_path), []).append({plain_title(nb_title(p)): page_name(p, nbs_path)})
    order = ['Core'] + [f for f, _ in FAMILIES[1:]] + [STUDIES, 'More']
    nav = [{g: groups[g]} for g in order if g in groups]
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        procs = process_notebooks(todo, Path(tmp), n_workers, cache)
        if not quiet: print(f'nbdev processors: {len(todo)} notebooks in {time.time()-t0:.0f} s')
        gone = {p for p, proc in zip(todo, procs) if proc is None}
        nav = [{g: [it for it in items if list(it.values())[0] not in {nb_pages[p.relative_to(nbs_path).as_posix()] for p in gone}]}
               for d in nav for g, items in d.items()]
        for p, proc in zip(todo, procs):
            if proc is None: continue
            page = nb_pages[p.relative_to(nbs_path).as_posix()]
            md = notebook_markdown(proc, p, page, src, cfg, nb_pages)
            (src/page).parent.mkdir(parents=True, exist_ok=True); (src/page).write_text(md, encoding='utf-8')
            written.append(page)
            for img in re.findall(r'!\[[^\]]*\]\(([^)\s:]+\.(?:png|jpg|svg|gif))\)', md):   # images the markdown itself links
                if (f := p.parent/img).is_file() and not (src/Path(page).parent/img).exists():
                    (src/Path(page).parent/img).parent.mkdir(parents=True, exist_ok=True); shutil.copy(f, src/Path(page).parent/img)
    if not only: fix_anchors(src, written)
    return nav, written

def build_site(out:Path=ROOT/'_site', only=None, n_workers:int=2, quiet:bool=False, keep:Path|None=None, strict:bool=False,
               cache:bool=True)->Path:
    "The whole site into `out`: Markdown pages from the processed notebooks, then `mkdocs build`"
    from mkdocs.config import load_config
    from mkdocs.commands.build import build
    cfg = read_settings()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(keep) if keep else Path(tmp)/'md'
        if src.exists(): shutil.rmtree(src)
        src.mkdir(parents=True)
        nav, written = write_markdown(ROOT/cfg.get('nbs_path', 'nbs'), src, only, n_workers, quiet, cache)
        if only:   # pages not built still need a stub so the sidebar links resolve
            for group in nav:
                for item in list(group.values())[0]:
                    page = list(item.values())[0]
                    if not (src/page).exists(): (src/page).parent.mkdir(parents=True, exist_ok=True); (src/page).write_text(f'# {list(item)[0]}\n\n(not built)\n')
        for f in ('editlab.css', 'iframe-worker-shim.js'): shutil.copy(DOCS/f, src/f)
        sys.path.insert(0, str(DOCS))   # mkdocs.yml names hooks.slugify
        log, seen = logging.getLogger('mkdocs'), _Warnings()
        log.addHandler(seen)
        try: build(load_config(str(DOCS/'mkdocs.yml'), **site_settings(cfg, src, Path(out).resolve(), nav)))
        finally: log.removeHandler(seen)
    if not quiet: print(f'docs: {len(written)} pages from notebooks, site in {out} ({time.time()-t0:.0f} s), '
                        f'{len(seen.messages)} MkDocs warnings')
    if strict and seen.messages: raise SystemExit(f'{len(seen.messages)} MkDocs warnings (--strict)')
    return Path(out)

class _Warnings(logging.Handler):
    "Collects (and prints) MkDocs' warnings: broken links and anchors, pages outside the nav"
    def __init__(self): super().__init__(logging.WARNING); self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage()); print(f'WARNING  {record.getMessage()}', file=sys.stderr)


# --- README ----------------------------------------------------------------------------------------------------
def _out_text(o:dict)->str|None:
    if o.get('output_type') == 'stream': return _text(o.get('text', ''))
    if o.get('output_type') == 'error': return '\n'.join(o.get('traceback', []))
    d = o.get('data', {})
    if 'text/plain' in d and 'image/png' not in d: return _text(d['text/plain'])
    return None

def render_readme(out:Path=ROOT/'README.md', execute:bool=True)->Path:
    "Write README.md from nbs/index.ipynb (executed), as plain GitHub markdown"
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    nbs = ROOT/read_settings().get('nbs_path', 'nbs')
    nb = read_nb(nbs/'index.ipynb')
    if execute:
        cwd = os.getcwd(); os.chdir(nbs)
        try: CaptureShell().run_all(nb, exc_stop=True)
        finally: os.chdir(cwd)
    parts = ['<!-- generated from nbs/index.ipynb by `python docs/build_docs.py --readme`; edit the notebook, not this file -->']
    for c in nb.cells:
        src = _text(c.source).strip()
        if c.cell_type == 'markdown': parts.append(src)
        elif c.cell_type == 'code' and src and not src.startswith('#|'):
            parts.append(f'```python\n{src}\n```')
            outs = [t for t in map(_out_text, c.get('outputs', [])) if t and t.strip()]
            if outs: parts.append('```\n' + _re_ansi.sub('', '\n'.join(t.rstrip() for t in outs)) + '\n```')
    out.write_text('\n\n'.join(parts) + '\n')
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build editlab's docs site offline (MkDocs Material, maths as MathML)")
    ap.add_argument('--out', default=str(ROOT/'_site'), help='folder for the site (default: _site)')
    ap.add_argument('--only', nargs='*', help='build just these notebooks (names or stems)')
    ap.add_argument('--workers', type=int, default=2, help="processes running nbdev's processors")
    ap.add_argument('--keep', help='keep the generated Markdown in this folder')
    ap.add_argument('--quiet', action='store_true')
    ap.add_argument('--no-cache', action='store_true', help="rerun nbdev's processors on every notebook (ignore _proc/docs-cache)")
    ap.add_argument('--strict', action='store_true', help='fail when MkDocs warns (a broken link or anchor)')
    ap.add_argument('--readme', action='store_true', help='(re)write README.md from nbs/index.ipynb, executed, and stop')
    a = ap.parse_args(argv)
    if a.readme: print(f'wrote {render_readme()}'); return
    build_site(Path(a.out), a.only, a.workers, a.quiet, a.keep, a.strict, not a.no_cache)

if __name__ == '__main__':   # run as the module `build_docs`, so that spawned workers can import `_process_one`
    sys.path.insert(0, str(DOCS))
    import build_docs
    build_docs.main()
