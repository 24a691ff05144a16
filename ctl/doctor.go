package ctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

// check is one line of `sandboxctl doctor`.
type check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
}

// doctor checks the host and the daemon, one line per check with a fix,
// and fails if a required check does. It changes nothing.
func (c *cli) doctor(ctx context.Context, _ []string) error {
	var checks []check
	add := func(name string, required, ok bool, detail, fix string) {
		checks = append(checks, check{Name: name, OK: ok, Required: required, Detail: detail, Fix: fix})
	}
	socketChecks(c.socket, add)
	cl := client.New(c.socket)
	info, infoErr := cl.Info(ctx)
	if infoErr != nil {
		add("daemon", true, false, infoErr.Error(), "start it: systemctl start sandboxd (or make run)")
	} else {
		add("daemon", true, true, "sandboxd "+info.Version+" answers", "")
		up := info.ContainerdVersion != ""
		if _, err := cl.Health(ctx); err != nil {
			up = false
		}
		detail := fmt.Sprintf("containerd %s at %s", info.ContainerdVersion, info.ContainerdAddress)
		if info.ContainerdManaged {
			detail += " (managed by sandboxd)"
		}
		if !up {
			detail = "containerd does not answer at " + info.ContainerdAddress
		}
		add("containerd", true, up, detail, "start containerd: systemctl start containerd (or restart sandboxd to get a managed one)")
	}
	runc, err := lookPath("runc")
	add("runc", true, err == nil, orDetail(runc, err), "apt-get install runc")
	cgroupChecks(add)
	_, err = os.Stat("/proc/sys/kernel/seccomp/actions_avail")
	add("seccomp", true, err == nil && hasStatusField("Seccomp:"), "the kernel filters syscalls", "use a kernel built with CONFIG_SECCOMP_FILTER")
	fsys, _ := os.ReadFile("/proc/filesystems")
	add("overlay", false, strings.Contains(string(fsys), "overlay"), "overlay filesystem (for image runtimes)", "modprobe overlay")
	userns, _ := os.ReadFile("/proc/sys/user/max_user_namespaces")
	n, _ := strconv.Atoi(strings.TrimSpace(string(userns)))
	add("user namespaces", false, n > 0, fmt.Sprintf("max_user_namespaces=%d", n), "sysctl -w user.max_user_namespaces=15000")
	if infoErr == nil {
		langs, err := cl.Languages(ctx)
		var names, notInstalled, packages []string
		for _, l := range langs {
			if l.Missing != "" {
				notInstalled = append(notInstalled, l.Name)
				packages = append(packages, l.Package)
				continue
			}
			names = append(names, l.Name+" "+l.Version)
		}
		add("languages", true, err == nil && len(names) > 0, strings.Join(names, ", "), "install runtimes: apt-get install python3 nodejs gcc")
		if len(notInstalled) > 0 {
			// Built-in languages this host has not installed: one line,
			// not one warning each.
			slices.Sort(packages)
			add("not installed", false, false, strings.Join(notInstalled, ", "),
				"apt-get install "+strings.Join(slices.Compact(slices.DeleteFunc(packages, func(p string) bool { return p == "" })), " "))
		}
		for _, l := range langs {
			if l.Unavailable != "" && l.Missing == "" {
				add("language "+l.Name, false, false, l.Unavailable, "see above; sandboxctl languages lists them all")
			}
		}
		// Each OCI runtime is tried for real: a sandbox that runs `true`.
		shell := ""
		for _, l := range langs {
			if (l.Name == "sh" || l.Name == "bash") && l.Image == "" && l.Runtime == "runc" && l.Unavailable == "" {
				shell = l.Name
			}
		}
		for _, rt := range info.Runtimes {
			if shell == "" {
				break
			}
			res, err := cl.Execute(ctx, &api.ExecuteRequest{Language: shell, Code: "true", Runtime: rt})
			ok := err == nil && res.Status == api.StatusOK
			detail := "runs a sandbox"
			switch {
			case err != nil:
				detail = err.Error()
			case !ok:
				detail = fmt.Sprintf("a sandbox running `true` ended %s: %s", res.Status, strings.TrimSpace(res.Stderr))
			}
			fix := "see sandboxd's log (journalctl -u sandboxd)"
			if rt == "runsc" {
				fix = "apt-get install runsc; see runtimes.runsc in sandboxd.toml and docs/security.md"
			}
			add("runtime "+rt, rt == "runc", ok, detail, fix)
		}
	}

	failed := false
	for _, ch := range checks {
		if !ch.OK && ch.Required {
			failed = true
		}
	}
	if c.format == "json" {
		c.printJSON(checks)
	} else {
		for _, ch := range checks {
			mark := "ok  "
			switch {
			case !ch.OK && ch.Required:
				mark = "FAIL"
			case !ch.OK:
				mark = "warn"
			}
			fmt.Fprintf(c.stdout, "%s  %-16s %s\n", mark, ch.Name, ch.Detail)
			if !ch.OK && ch.Fix != "" {
				fmt.Fprintf(c.stdout, "      %-16s fix: %s\n", "", ch.Fix)
			}
		}
	}
	if failed {
		return exitStatus(1)
	}
	return nil
}

func orDetail(s string, err error) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// lookPath also looks in the sbin directories, which a user's PATH may lack.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if _, err := os.Stat(dir + "/" + name); err == nil {
			return dir + "/" + name, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func socketChecks(path string, add func(string, bool, bool, string, string)) {
	fi, err := os.Stat(path)
	if err != nil {
		add("socket", true, false, err.Error(), "start sandboxd (systemctl start sandboxd.socket sandboxd), or pass --socket")
		return
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	detail := fmt.Sprintf("%s mode %04o", path, fi.Mode().Perm())
	if st != nil {
		detail += fmt.Sprintf(" gid %d", st.Gid)
	}
	add("socket", true, fi.Mode()&fs.ModeSocket != 0, detail, "remove the file and restart sandboxd")
	conn, err := net.Dial("unix", path)
	if err == nil {
		conn.Close()
		add("access", true, true, fmt.Sprintf("uid %d may use the socket", os.Getuid()), "")
		return
	}
	fix := "is sandboxd running?"
	if errors.Is(err, syscall.EACCES) {
		fix = "add yourself to its group: usermod -aG sandboxd $USER (then log in again)"
	}
	add("access", true, false, err.Error(), fix)
}

// cgroupChecks checks the controllers sandboxes need: memory, pids, cpu.
func cgroupChecks(add func(string, bool, bool, string, string)) {
	need := []string{"memory", "pids", "cpu"}
	if data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		have := strings.Fields(string(data))
		sub, _ := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		delegated := strings.Fields(string(sub))
		var missing []string
		for _, n := range need {
			if !slices.Contains(have, n) || !slices.Contains(delegated, n) {
				missing = append(missing, n)
			}
		}
		add("cgroups", true, len(missing) == 0, fmt.Sprintf("v2; controllers %s, delegated %s", strings.Join(have, " "), strings.Join(delegated, " ")),
			"enable and delegate "+strings.Join(missing, ", ")+" in /sys/fs/cgroup/cgroup.subtree_control")
		return
	}
	data, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		add("cgroups", true, false, err.Error(), "mount the cgroup filesystem")
		return
	}
	var missing []string
	for _, n := range need {
		found := false
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) == 4 && f[0] == n && f[3] == "1" {
				if _, err := os.Stat("/sys/fs/cgroup/" + n); err == nil {
					found = true
				}
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	add("cgroups", true, len(missing) == 0, "v1; memory, pids and cpu controllers mounted", "enable the "+strings.Join(missing, ", ")+" controllers (kernel command line)")
}

func hasStatusField(field string) bool {
	data, err := os.ReadFile("/proc/self/status")
	return err == nil && strings.Contains(string(data), field)
}
