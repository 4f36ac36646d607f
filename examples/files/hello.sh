#!/bin/sh
# Installed by examples/debian-12.yaml as /usr/local/bin/kiln-hello.
echo "hello from a kiln-built image"
