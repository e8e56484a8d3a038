module github.com/hivemind/hivemind/test/attack

go 1.26.0

require (
	github.com/hivemind/hivemind/pkg v0.0.0
	go.etcd.io/raft/v3 v3.7.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)
