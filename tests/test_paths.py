"""No machine paths: nothing in the notebooks, the library, the tests or the benchmarks points into a `shared/` folder
or at an absolute path of a build machine; the data sets are reached through `editlab.data`'s loaders only."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ('nbs', 'editlab', 'tests', 'bench')
SUFFIXES = {'.py', '.ipynb', '.md', '.txt', '.json', '.cfg', '.ini', '.sh', '.yml', '.yaml', '.toml'}
# a path into shared/ (as text, or joined in Python: 'shared'/'data'), or an absolute path under a home or work folder
# (the literals are assembled here so that this file itself names no such path)
SH, DATA = 'shared', 'data'
BAD = re.compile('|'.join([SH + '/' + DATA, r"""['"]""" + SH + r"""['"]\s*/""", r'(?<![\w.])/(work|root|home|Users)/']))

def _files():
    for folder in FOLDERS:
        for p in (ROOT/folder).rglob('*'):
            if p.is_file() and p.suffix in SUFFIXES and '.ipynb_checkpoints' not in p.parts and p.name != Path(__file__).name:
                yield p

def test_no_shared_or_absolute_paths():
    hits = []
    for p in _files():
        for i, line in enumerate(p.read_text(encoding='utf-8', errors='replace').splitlines(), 1):
            if BAD.search(line): hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "machine paths found (use editlab.data's loaders or $EDITLAB_DATA):\n" + '\n'.join(hits)

def test_the_pattern_catches_what_it_should():
    root = '/'.join(['', 'root', '']); home = '/'.join(['', 'home', '']); work = '/'.join(['', 'work', ''])
    for bad in [f"Path('../../{SH}/{DATA}')", f"parent/'{SH}'/'{DATA}'", f"load('{work}{SH}/x.json')", f"'{root}.cache'",
                f"open('{home}me/data.csv')"]:
        assert BAD.search(bad), bad
    for ok in ["load_counterfact('dev-500')", "data_file('corpus/wikitext-2-valid.txt')", f"https://x.org{work}a",
               "a shared CPU", "os.environ['EDITLAB_DATA']"]:
        assert not BAD.search(ok), ok
