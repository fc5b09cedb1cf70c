#!/bin/sh
# cvmctl as installed: reads the same configuration file as the cvmd unit, so it finds the
# daemon's data dir without further flags.
: "${CVM_CONFIG_FILE:=/etc/cvm/cvmd.json}"
export CVM_CONFIG_FILE
exec /usr/local/lib/cvm/dist/host/cli/main.js "$@"
