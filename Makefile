# Thin wrapper over ./dev (which needs only bash, so a fresh machine without make works too).
.PHONY: setup demo test unit bench
setup demo test unit bench:
	./dev $@
