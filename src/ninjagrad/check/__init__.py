"""The grader: judge hand-written gradients against autograd, tell rounding from bugs, name the mistake.

trace.py     run a straight-line forward script under autograd: nodes, reference gradients, edges
setup.py     a forward script's setup section: its own inputs, marked param(...) or data(...)
runner.py    run a learner's file statement by statement with teacher forcing (and a plain run)
verdicts.py  exact / rounding / wrong / shape / missing / error
diagnose.py  sign, scale, missing branch, broadcast, axis, transpose, aliasing, duplicate index, ...
core.py      one file against one exercise -> report;  worker.py  the same in a limited child process
report.py    rich table and JSON;  api.py  cmp and check_backward for notebooks;  commands.py  the CLI
"""
