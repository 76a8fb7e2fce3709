// Running a piece of a test as another account (the broker's user), in a forked child that drops
// every privilege the way Mosquitto does: supplementary groups, then group, then user. What the
// child may do is then decided by the kernel's permissions alone, as for a compromised broker.
#pragma once

#include <grp.h>
#include <pwd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <optional>
#include <string>

namespace onboard::test {

struct Account {
  uid_t uid;
  gid_t gid;
};

// User and group `mosquitto` (the Debian package makes both) when the test runs as root; nullopt
// otherwise: only root can become another user, so callers skip and say so.
inline std::optional<Account> broker_account() {
  if (::geteuid() != 0) return std::nullopt;
  const passwd* pw = ::getpwnam("mosquitto");
  const group* gr = ::getgrnam("mosquitto");
  if (pw == nullptr || gr == nullptr) return std::nullopt;
  return Account{pw->pw_uid, gr->gr_gid};
}

// Runs `f` in a child as `account` (with only its group) and returns what `f` returned; a child
// that could not drop its privileges, or died, returns "child failed: ..." instead. `f` must not
// use the test framework's assertions: the parent checks what it reports.
inline std::string run_as(const Account& account, const std::function<std::string()>& f) {
  int fds[2];
  if (::pipe(fds) != 0) return "child failed: pipe";
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return "child failed: fork";
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    if (::setgroups(1, &account.gid) != 0 ||
        ::setresgid(account.gid, account.gid, account.gid) != 0 ||
        ::setresuid(account.uid, account.uid, account.uid) != 0 || ::geteuid() != account.uid) {
      out = "child failed: cannot drop privileges";
    } else {
      try {
        out = f();
      } catch (...) {
        out = "child failed: exception";
      }
    }
    for (std::size_t done = 0; done < out.size();) {
      const auto n = ::write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) {
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "child failed: status " + std::to_string(status);
  return out;
}

}  // namespace onboard::test
