"""The `codetask` command: run code on the cluster as CodeTasks and read their results.

`main.py` holds the click commands, `client.py` the API access, `manifest.py`, `tasks.py` and
`render.py` the pure parts (what to create, what exit code, what to show), `errors.py` the
translation of API failures into one-line messages.
"""
