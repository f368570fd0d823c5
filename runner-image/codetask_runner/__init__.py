"""The CodeTask runner: runs one piece of user code in a child process and reports the result.

Standard library only (redis-py is imported lazily when ``REDIS_URL`` is set); the interface to the
operator is docs/runner-contract.md, the behaviour is described in runner-image/README.md.
"""
