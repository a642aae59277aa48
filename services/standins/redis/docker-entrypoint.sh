#!/bin/sh
# As in the official image: `redis-server` without a config file that sets protected-mode serves
# every client (protected mode would refuse all but loopback ones, there being no password).
set -e
if [ "$1" = redis-server ] && ! { [ -f "${2:-}" ] && grep -q '^protected-mode' "$2"; }; then
    set -- "$@" --protected-mode no
fi
exec "$@"
