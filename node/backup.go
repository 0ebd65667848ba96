package node

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/lni/dragonboat/v4"
	dbconfig "github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/tools"
	"github.com/lni/vfs"
)

// A backup is dragonboat's exported snapshot of the shard (the state
// machine's own snapshot: sessions, response caches, server requests and the
// application's state, plus Raft's membership record) packed in a tar
// stream: POST /admin/snapshot answers it, `zraft snapshot save FILE` writes
// it, and Restore prepares a member's data dir of a new cluster from it.

// ErrBackup is wrapped by every error about taking or restoring a backup.
var ErrBackup = errors.New("node: backup")

// Restore limits: a backup holds a handful of files (metadata, the
// snapshot image); anything else is not one of ours.
const (
	maxBackupFiles    = 64
	maxBackupFileSize = 64 << 30
)

// serveSnapshot streams a backup of this member's applied state. Ask the
// leader: it has applied every acknowledged write.
func (n *Node) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if !n.snapshotting.CompareAndSwap(false, true) {
		http.Error(w, "a snapshot is already being taken on this member; try again when it is done", http.StatusConflict)
		return
	}
	defer n.snapshotting.Store(false)
	dir, files, cleanup, err := n.exportSnapshot(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer cleanup()
	w.Header().Set("Content-Type", "application/x-tar")
	if err := writeTar(w, n.fs, dir, files); err != nil {
		n.log.Warn("snapshot stream failed", "err", err)
		// The status line is sent: abort the response (the connection is
		// cut without the chunked stream's end), so that no client can
		// take a cut stream for a whole backup.
		panic(http.ErrAbortHandler)
	}
}

// exportSnapshot asks dragonboat for an exported snapshot in a fresh
// directory under the data dir and returns the directory holding it, its
// file names and a function removing it.
func (n *Node) exportSnapshot(ctx context.Context) (string, []string, func(), error) {
	nh := n.raft.nh.Load()
	if nh == nil {
		return "", nil, nil, errNotStarted
	}
	fs := n.fs
	base := fs.PathJoin(n.nodeHostDir, fmt.Sprintf("export-%d", n.exports.Add(1)))
	_ = fs.RemoveAll(base)
	if err := fs.MkdirAll(base, 0o750); err != nil {
		return "", nil, nil, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	cleanup := func() { _ = fs.RemoveAll(base) }
	sctx, cancel := context.WithTimeout(ctx, 10*n.cfg.ProposalTimeout)
	defer cancel()
	if _, err := nh.SyncRequestSnapshot(sctx, n.cfg.ShardID, dragonboat.SnapshotOption{Exported: true, ExportPath: base}); err != nil {
		cleanup()
		return "", nil, nil, fmt.Errorf("%w: export: %v", ErrBackup, err)
	}
	// dragonboat writes the snapshot into one subdirectory of base.
	subs, err := fs.List(base)
	if err != nil || len(subs) != 1 {
		cleanup()
		return "", nil, nil, fmt.Errorf("%w: export left %d entries in %s (%v)", ErrBackup, len(subs), base, err)
	}
	dir := fs.PathJoin(base, subs[0])
	files, err := fs.List(dir)
	if err != nil {
		cleanup()
		return "", nil, nil, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	return dir, files, cleanup, nil
}

func writeTar(w io.Writer, fs vfs.FS, dir string, files []string) error {
	tw := tar.NewWriter(w)
	for _, name := range files {
		p := fs.PathJoin(dir, name)
		st, err := fs.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		f, err := fs.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// Restore prepares this member's data dir (cfg.DataDir, which must hold no
// data for cfg.ID) to start a NEW cluster from a backup: the snapshot is
// imported with cfg.Members as the new membership and cfg.ClusterID
// (required; generate it with NewClusterID, never the old cluster's) is
// stored, so the restored members refuse traffic from the old cluster. Run
// it on every member of the new cluster with the same backup, members and
// cluster id, then Start each one as usual.
//
// dragonboat refuses a member id that the old cluster had with another Raft
// address: give the new members the old ids with their old addresses, or
// ids the old cluster never used.
func Restore(cfg Config, backup io.Reader) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.InMemory {
		return fmt.Errorf("%w: restore needs a data dir on disk, not in_memory", ErrBackup)
	}
	if cfg.ClusterID == "" {
		return fmt.Errorf("%w: a restored cluster needs a new cluster_id (--cluster-id $(node --new-cluster-id))", ErrBackup)
	}
	did, err := ParseClusterID(cfg.ClusterID)
	if err != nil {
		return err
	}
	nhDir := filepath.Join(cfg.DataDir, fmt.Sprintf("node-%d", cfg.ID))
	if names, err := os.ReadDir(nhDir); err == nil && len(names) > 0 {
		return fmt.Errorf("%w: %s is not empty: restore starts a new member on an empty data dir", ErrBackup, nhDir)
	}
	tmp, err := os.MkdirTemp(cfg.DataDir, "restore-")
	if err != nil {
		if err = os.MkdirAll(cfg.DataDir, 0o750); err == nil {
			tmp, err = os.MkdirTemp(cfg.DataDir, "restore-")
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBackup, err)
		}
	}
	defer os.RemoveAll(tmp)
	if err := untar(backup, tmp); err != nil {
		return err
	}
	initial := make(map[uint64]string, len(cfg.Members))
	for _, m := range cfg.Members {
		initial[m.ID] = m.RaftAddr
	}
	nhc := dbconfig.NodeHostConfig{
		NodeHostDir:    nhDir,
		RTTMillisecond: uint64(max(cfg.RTT.Milliseconds(), 1)),
		RaftAddress:    cfg.self().RaftAddr,
		DeploymentID:   did,
		Expert:         dbconfig.ExpertConfig{LogDB: dbconfig.GetSmallMemLogDBConfig(), FS: vfs.Default},
	}
	if err := os.MkdirAll(nhDir, 0o750); err != nil {
		return fmt.Errorf("%w: %v", ErrBackup, err)
	}
	if err := tools.ImportSnapshot(nhc, tmp, initial, cfg.ID); err != nil {
		return fmt.Errorf("%w: import: %v", ErrBackup, err)
	}
	return writeClusterID(vfs.Default, nhDir, strings.ToLower(cfg.ClusterID))
}

// untar unpacks a backup's flat list of regular files into dir, refusing
// anything else (paths, links, too many or too large files).
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	count := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: not a zraft backup (tar): %v", ErrBackup, err)
		}
		count++
		if count > maxBackupFiles {
			return fmt.Errorf("%w: more than %d files: not a zraft backup", ErrBackup, maxBackupFiles)
		}
		if h.Typeflag != tar.TypeReg || h.Name != path.Base(h.Name) || h.Name == "." || h.Name == ".." ||
			h.Size < 0 || h.Size > maxBackupFileSize {
			return fmt.Errorf("%w: unexpected entry %q in backup", ErrBackup, h.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBackup, err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, h.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBackup, err)
		}
	}
	if count == 0 {
		return fmt.Errorf("%w: empty backup", ErrBackup)
	}
	return nil
}
