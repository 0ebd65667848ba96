package jobqueue

import (
	"context"

	"github.com/zraft/zraft/client"
)

// DialWorker connects a worker: a client session that declares role=worker
// and runs each job it is given with run, one at a time. With inFlight > 0
// the session acknowledges a job only when run returns (client.WithManualAck)
// and holds at most inFlight unacknowledged jobs: a job whose worker dies
// before that moves to another worker (at least once). With inFlight == 0
// jobs are acknowledged on receipt, before run: a worker that dies loses the
// jobs it had received but not finished (at most once). Close the returned
// Conn to stop; a job run is working on when Close is called is not
// acknowledged and goes to another worker.
func DialWorker(ctx context.Context, endpoints []string, inFlight int, run func(id uint64, body []byte), opts ...client.Option) (*client.Conn, error) {
	handler := func(r client.ServerRequest) {
		id, body, err := DecodeJob(r.Payload)
		if err != nil {
			return // not a job: acknowledged and skipped
		}
		run(id, body)
	}
	all := []client.Option{
		client.WithCapabilities(map[string]string{Worker.Name: Worker.Value}),
		client.WithServerRequestHandler(handler),
	}
	if inFlight > 0 {
		all = append(all, client.WithManualAck(inFlight))
	}
	return client.Dial(ctx, endpoints, append(all, opts...)...)
}
