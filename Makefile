# Thin wrapper over ./dev (which needs only bash, so a fresh machine without make works too).
.PHONY: setup demo test unit bench deb deb-check
setup demo test unit bench deb deb-check:
	./dev $@
