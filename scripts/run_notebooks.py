"""Execute notebooks and save them with their outputs, so GitHub, JupyterLab and the docs show results.

Runs every cell `nbdev_test` runs (cells marked `#| slow` and `#| eval: false` are skipped, as in the tests), in the
notebook's own folder, with `$EDITLAB_DATA` unset so the outputs are what a fresh clone shows. The notebook is written
back only when every cell ran; then `nbdev_clean` normalises it. Plots are saved as plain PNG; an image over 150 KB
is reported.

    python scripts/run_notebooks.py nbs/32_rome.ipynb [more.ipynb ...]   # or no argument: every notebook
"""
import base64, os, subprocess, sys, time
from pathlib import Path

os.environ.pop('EDITLAB_DATA', None)
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc

MAX_IMG = 150_000
SKIP = {'slow'}

def _skip(cell):
    if cell.cell_type != 'code': return True
    if 'nbdev_export(' in cell.source: return True
    d = getattr(cell, 'directives_', {}) or {}
    if d.get('eval:', [''])[0].lower() == 'false': return True
    return bool(SKIP & d.keys())

def run(fn:Path):
    "Execute `fn`'s non-slow cells and write the outputs into the notebook; returns seconds taken"
    raw = read_nb(fn)
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    if len(nb.cells) != len(raw.cells): raise RuntimeError(f"{fn}: processed notebook has a different number of cells")
    for c in nb.cells:   # a cell that now prints nothing must not keep what it printed before
        if c.cell_type == 'code': c['outputs'] = []
    sh = CaptureShell(fn, mpl_format='png')
    t = time.time()
    try:
        with working_directory(fn.parent): sh.run_all(nb, exc_stop=True, preproc=_skip)
    except Exception as e: raise RuntimeError(sh.prettytb(fname=fn)) from e
    for r, c in zip(raw.cells, nb.cells):
        if r.cell_type != 'code': continue
        outs = c.get('outputs', []) if not _skip(c) else []
        # progress bars (stderr redrawn with carriage returns) are noise in a saved notebook
        r['outputs'] = [o for o in outs if not (o.get('name') == 'stderr' and '\r' in ''.join(o.get('text', '')))]
        r['execution_count'] = None
        for o in r['outputs']:
            png = o.get('data', {}).get('image/png')
            if png and len(base64.b64decode(png)) > MAX_IMG:
                print(f"  warning: {fn.name}: an image of {len(base64.b64decode(png))//1000} KB (limit {MAX_IMG//1000} KB)")
    write_nb(raw, fn)
    subprocess.run(['nbdev_clean', '--fname', str(fn)], check=True)
    return time.time() - t

if __name__ == '__main__':
    nbs = [Path(a) for a in sys.argv[1:]] or sorted(Path(get_config().nbs_path).rglob('*.ipynb'))
    failed = []
    for fn in nbs:
        if '.ipynb_checkpoints' in fn.parts or fn.name.startswith('_'): continue
        try: print(f"{fn}: {run(fn.resolve()):.0f} s", flush=True)
        except Exception as e:
            failed.append(fn); print(f"{fn}: FAILED, left unchanged\n{e}", flush=True)
    if failed: sys.exit(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}")
