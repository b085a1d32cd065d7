"""The applications, apart from the library they use: speed (`speed.py`, every method side by side), paired
batch-1 timing (`paired.py`), image quality of every method (`quality.py`), the plots of a speed run (`plots.py`)
and the main job, a timed grid of samples of every class (`sample_grid.py`). All time calls with `timing.time_calls`
(methods side by side, image by image: `timing.time_interleaved`).

Nothing is imported here, so that `import hf_specdec.bench.speed` does not pull in matplotlib or `evaluate`.
"""
