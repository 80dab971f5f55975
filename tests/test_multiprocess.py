"""Studies beyond one process: the editor comparison (with a batch editor), Table 5.2 (registry methods, saved and
resumable), two sequential runs and a steering sweep, run by 2 CPU processes under `accelerate launch` (torchrun, gloo)
give the same frames and saved CSVs as one process, except the measured seconds and memory (tests/mp_studies.py)"""
import os, socket, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest

HERE = Path(__file__).parent
STUDIES = ['compare', 'compare_saved', 'table', 'table_saved', 'sequential', 'sweep']
MEASURED = ['seconds', 'peak_mb', 's_per_edit', 'peak_rss_mb']   # wall time and memory: never equal between two runs

def _port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _run(cmd, tmp):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'EDITLAB_CACHE': str(tmp/'cache'), 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('mp')
    _run([sys.executable, str(HERE/'mp_studies.py'), str(tmp/'one')], tmp)
    _run([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
          '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(_port()),
          str(HERE/'mp_studies.py'), str(tmp/'two')], tmp)
    return tmp/'one', tmp/'two'

def test_two_processes_ran(runs):
    "The launch really had 2 processes, and each edited only its own share of the records"
    one, two = runs
    assert (one/'processes.txt').read_text() == '1' and (two/'processes.txt').read_text() == '2'
    shares = [(two/f'rome_records_{r}.txt').read_text().split() for r in (0, 1)]
    assert all(shares) and sorted(shares[0] + shares[1]) == ['0', '1', '2']
    assert (one/'rome_records_0.txt').read_text().split() == ['0', '1', '2']
    assert not list(two.glob('*.part*.csv'))   # partial files merged and removed

@pytest.mark.parametrize('study', STUDIES)
def test_same_as_one_process(runs, study):
    one, two = runs
    a, b = pd.read_csv(one/f'{study}.csv'), pd.read_csv(two/f'{study}.csv')
    assert list(a.columns) == list(b.columns) and len(a) > 0
    if 'method' in a: assert a.method.nunique() >= 2
    keep = [c for c in a.columns if c not in MEASURED]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True)
