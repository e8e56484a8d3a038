module github.com/hivemind/hivemind/services/notifier

go 1.26

require github.com/hivemind/hivemind/pkg v0.0.0

replace github.com/hivemind/hivemind/pkg => ../../pkg
