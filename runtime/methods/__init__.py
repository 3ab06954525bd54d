"""One package per editing method, each built on cyclediff.runtime.core."""
