#!/usr/bin/env bash
# The images' entrypoint: `inferq ARGS...`, `inferq worker` without arguments.
# exec: inferq replaces this shell as PID 1, so `docker stop` (SIGTERM) reaches
# the worker, which finishes its running chunk and leaves queued work in Redis.
set -euo pipefail
if [ "$#" -eq 0 ]; then
    set -- worker
fi
exec inferq "$@"
