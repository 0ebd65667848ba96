package node

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/lni/vfs"

	"github.com/zraft/zraft/node/raftnet"
)

// ErrClusterID is wrapped by every error about the cluster id: a malformed
// one, none for a new member of a multi-member cluster, or a data dir that
// belongs to another cluster.
var ErrClusterID = errors.New("node: cluster id")

// clusterIDFile holds the cluster id in the member's node directory.
const clusterIDFile = "cluster-id"

// NewClusterID returns a random non-zero cluster id in its text form (16
// hex digits).
func NewClusterID() string {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("node: crypto/rand: %v", err)) // the runtime guarantees it does not fail
		}
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return FormatClusterID(v)
		}
	}
}

// FormatClusterID writes id as 16 hex digits.
func FormatClusterID(id uint64) string { return fmt.Sprintf("%016x", id) }

// ParseClusterID reads 16 hex digits (a non-zero 64-bit value).
func ParseClusterID(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if len(s) != 16 {
		return 0, fmt.Errorf("%w: %q is not 16 hex digits", ErrClusterID, s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: %q is not a non-zero 16-digit hex value", ErrClusterID, s)
	}
	return v, nil
}

// readClusterID returns the id stored in dir, or "" when none is.
func readClusterID(fs vfs.FS, dir string) (string, error) {
	f, err := fs.Open(fs.PathJoin(dir, clusterIDFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("%w: read: %v", ErrClusterID, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return "", fmt.Errorf("%w: read: %v", ErrClusterID, err)
	}
	s := strings.TrimSpace(string(b))
	if _, err := ParseClusterID(s); err != nil {
		return "", fmt.Errorf("%s/%s: %w", dir, clusterIDFile, err)
	}
	return s, nil
}

// writeClusterID stores id in dir durably (written aside, synced, renamed).
func writeClusterID(fs vfs.FS, dir, id string) error {
	tmp := fs.PathJoin(dir, clusterIDFile+".tmp")
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("%w: store: %v", ErrClusterID, err)
	}
	_, err = f.Write([]byte(id + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, fs.PathJoin(dir, clusterIDFile))
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(dir); err == nil {
			err = d.Sync()
			_ = d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%w: store: %v", ErrClusterID, err)
	}
	return nil
}

// resolveClusterID decides the member's cluster id (see Config.ClusterID):
// the stored one if any (a configured one must equal it); else the
// configured one; else, for a one-member cluster, a new random one. A new
// member of a larger cluster without a configured id is an error, and so is
// a node directory that holds data but no id (written before ids existed).
func resolveClusterID(fs vfs.FS, dir string, cfg *Config) (uint64, error) {
	stored, err := readClusterID(fs, dir)
	if err != nil {
		return 0, err
	}
	id := stored
	switch {
	case stored != "" && cfg.ClusterID != "" && !strings.EqualFold(stored, cfg.ClusterID):
		return 0, fmt.Errorf("%w: %s belongs to cluster %s, not to the configured %s", ErrClusterID, dir, stored, cfg.ClusterID)
	case stored != "":
	default:
		names, err := fs.List(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%w: %v", ErrClusterID, err)
		}
		if len(names) > 0 {
			return 0, fmt.Errorf("%w: %s holds Raft data but no cluster id (it predates cluster ids): rebuild the "+
				"member, or write 0000000000000001 (dragonboat's default id it was created under, which any sender "+
				"can guess) to %s/%s on every member", ErrClusterID, dir, dir, clusterIDFile)
		}
		switch {
		case cfg.ClusterID != "":
			id = strings.ToLower(cfg.ClusterID)
		case len(cfg.Members) == 1:
			id = NewClusterID()
		default:
			return 0, fmt.Errorf("%w: a new member of a %d-member cluster needs cluster_id (--cluster-id), "+
				"the same on every member; generate one with `node --new-cluster-id`", ErrClusterID, len(cfg.Members))
		}
		if err := fs.MkdirAll(dir, 0o750); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrClusterID, err)
		}
		if err := writeClusterID(fs, dir, id); err != nil {
			return 0, err
		}
	}
	v, err := ParseClusterID(id)
	if err != nil {
		return 0, err
	}
	cfg.ClusterID = id
	return v, nil
}

// PeerTLSMode says in words how the Raft port is served (printed at start).
func (c *Config) PeerTLSMode() string {
	switch {
	case c.PeerTLS():
		return fmt.Sprintf("mutual TLS (certificate %s; peers need a certificate signed by %s)", c.PeerTLSCertFile, c.PeerTLSCAFile)
	case loopback(c.self().RaftAddr):
		return "plaintext on loopback (no peer TLS)"
	default:
		return "plaintext (insecure_peer: anyone who reaches it and reads the cluster id from the traffic can forge Raft messages)"
	}
}

// peerFrameLimit bounds one frame on the Raft port: dragonboat batches
// messages up to 64 MiB, and one message past that carries at most one
// more entry (an entry is at most a client frame, doubled for encoding
// overhead); snapshot chunks are 2 MiB.
func (c *Config) peerFrameLimit() uint64 { return 64<<20 + 2*uint64(c.MaxFrame) + 1<<20 }

// raftnetConfig builds the Raft transport's configuration.
func (c *Config) raftnetConfig() (raftnet.Config, error) {
	rc := raftnet.Config{
		ShardID:     c.ShardID,
		ReplicaID:   c.ID,
		Members:     make(map[uint64]string, len(c.Members)),
		MaxConns:    c.MaxPeerConns,
		IdleTimeout: c.PeerIdleTimeout,
		MaxFrame:    c.peerFrameLimit(),
	}
	for _, m := range c.Members {
		rc.Members[m.ID] = m.RaftAddr
	}
	if !c.PeerTLS() {
		return rc, nil
	}
	cert, err := tls.LoadX509KeyPair(c.PeerTLSCertFile, c.PeerTLSKeyFile)
	if err != nil {
		return rc, fmt.Errorf("node: peer tls key pair: %w", err)
	}
	pem, err := os.ReadFile(c.PeerTLSCAFile)
	if err != nil {
		return rc, fmt.Errorf("node: peer tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return rc, fmt.Errorf("%w: peer_tls_ca_file %s holds no PEM certificate", ErrConfig, c.PeerTLSCAFile)
	}
	rc.Cert, rc.CAs = cert, pool
	return rc, nil
}
