"""The grader: judge hand-written gradients against autograd, tell rounding from bugs, name the mistake.

Reading a submission (no torch):
  submission.py  a .py, percent-format, marimo or .ipynb file as cells (magics blanked)
  statements.py  top-level statements read tolerantly: what each reads and writes
  names.py       the learner's names for gradients (from their compare calls), autograd use, tampering
  layout.py      where exercises 1-4 and the forward are in a notebook
  program.py     one exercise's statements;  files.py  what to judge in a file, before torch is imported
The exercises:
  exercises.py   the exercise folders under ninjagrad/exercises;  setup.py  a forward script's inputs
  batch.py       the lecture's minibatch and parameters;  own_forward.py  a notebook's own setup and forward
  trace.py       a forward traced under autograd: nodes, reference gradients, edges
Judging, in two processes:
  worker.py      one judge process per file, limited from outside
  sandbox.py     the learner's process, forked before any answer exists;  wire.py  what passes between them
  learner.py     where the learner's statements run;  runner.py  running them with teacher forcing
  judge.py       the teacher-forced, plain and probing runs, from the judge's side
  core.py        one exercise -> a report;  notebook.py  a notebook, exercise by exercise
  verdicts.py    exact / rounding / wrong / shape / missing / error / uses-autograd / tampering
  diagnose.py    sign, scale, missing branch, broadcast, axis, transpose, aliasing, duplicate index, ...
Showing it:
  report.py      rich tables;  html.py, graph_layout.py, templates/  the HTML page
  api.py         cmp and check_backward;  magic.py  %%ninjagrad;  commands.py  the CLI's check, exercise,
                 hint, explain;  procs.py  processes and their memory, from /proc
"""
