"""The sweeps wing: what a Hydra multirun adds on top of single runs.

The multirun callback (callback.py), resuming a sweep (resume.py), the rows of every job (results.py),
the summary files (summary.py) and their plot (plot.py); the pruning sweeper hydra/sweeper=resnext
(sweeper.py, with its study in study.py and its asynchronous slots in slots.py), and its summary: trials and
slot use (trials.py), their table (trial_summary.py), Acc@1 curves (curves.py) and parameter importances
(importance.py). It imports training and below, never a command.
"""
