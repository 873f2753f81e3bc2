#!/bin/sh
# The program the example bundle grants: its SHA-256 is the same on every machine.
echo "hello from an authorized program"
