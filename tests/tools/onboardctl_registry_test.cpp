// onboardctl's registry commands run as an operator runs them: a real process on a real data
// directory, checked by exit code, by the one line on stderr, and by what is (not) left on disk.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "ca/certificate.h"
#include "ca/crl.h"
#include "ca/csr.h"
#include "ca/keys.h"
#include "core/files.h"
#include "registry/audit.h"
#include "registry/snapshot_loader.h"
#include "registry/sqlite_access.h"
#include "tests/support/as_user.h"
#include "tests/support/run.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::ca;
using nlohmann::json;
using onboard::test::RunResult;
using onboard::test::TempDir;

using onboard::test::files_in;
using onboard::test::mode_of;

namespace {

using Args = std::vector<std::string>;

RunResult onboardctl_in(const std::filesystem::path& data_dir, Args args,
                        const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", data_dir.string()});
  return onboard::test::run(args, {}, env);
}

// Fast CA keys and no group: the suite may run as root, and group access has its own case.
RunResult init_registry(const std::filesystem::path& data_dir, Args extra = {"--no-group"}) {
  Args args{"init", "--key-alg", "p256"};
  args.insert(args.end(), extra.begin(), extra.end());
  return onboardctl_in(data_dir, args);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Errors are exactly one line on stderr, prefixed with the program's name.
bool one_line_error(const RunResult& r) {
  return r.err.starts_with("onboardctl: ") && r.err.find('\n') == r.err.size() - 1;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string slurp(const std::filesystem::path& path) { return read_file(path).value(); }

std::string device_csr(const std::string& cn, ossl::Ptr<EVP_PKEY>* key_out = nullptr) {
  auto key = generate_key(KeyAlg::p256);
  REQUIRE(key.ok());
  auto req = make_csr(key->get(), cn);
  REQUIRE(req.ok());
  std::string pem = csr_to_pem(req->get());
  if (key_out != nullptr) *key_out = std::move(key).value();
  return pem;
}

std::uint64_t crl_number_of(const std::filesystem::path& path) {
  auto crl = crl_from_pem(slurp(path));
  REQUIRE(crl.ok());
  auto* number = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr));
  REQUIRE(number != nullptr);
  const long value = ASN1_INTEGER_get(number);
  ASN1_INTEGER_free(number);
  return static_cast<std::uint64_t>(value);
}

RunResult openssl_crl_text(const std::filesystem::path& crl) {
  return onboard::test::run({"/usr/bin/openssl", "crl", "-in", crl.string(), "-noout", "-text"});
}

// An initialised data directory, and a separate directory for the files the operator asks for.
struct Fleet {
  TempDir data, out;

  Fleet() {
    auto r = init_registry(data.path());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }

  RunResult operator()(const Args& args, const std::map<std::string, std::string>& env = {}) const {
    return onboardctl_in(data.path(), args, env);
  }
  std::string file(const std::string& name) const { return (out / name).string(); }

  // Registers `id` with a P-256 key made here, written to OUT/<id>.key.
  RunResult add(const std::string& id, const Args& extra = {}) const {
    Args args{"device", "register", id, "--key-alg", "p256", "--key-out", file(id + ".key")};
    args.insert(args.end(), extra.begin(), extra.end());
    return (*this)(args);
  }
  void require_add(const std::string& id, const Args& extra = {}) const {
    auto r = add(id, extra);
    INFO(id << ": " << r.err);
    REQUIRE(r.exit_code == 0);
  }

  bool has_device(const std::string& id) const {
    auto r = (*this)({"device", "show", id});
    if (r.exit_code == 4) return false;
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return true;
  }
  json show(const std::string& id) const {
    auto r = (*this)({"device", "show", id, "--json"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out);
  }
  json audit() const {
    auto r = (*this)({"audit", "list", "--json", "--limit", "0"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out);
  }
  std::size_t device_count() const {
    auto r = (*this)({"device", "list", "--json", "--limit", "0"});
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out)["devices"].size();
  }
  std::filesystem::path registry() const { return data / "registry.db"; }
  std::filesystem::path crl() const { return data / "crl.pem"; }
};

}  // namespace

// ---- init --------------------------------------------------------------------------------------

TEST_CASE("init makes the registry, the CA, the chain and a CRL, private to the operator") {
  TempDir base;
  const auto dir = base / "data";
  auto r = init_registry(dir);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "initialised " + dir.string()));
  CHECK(contains(r.out, "operator only"));

  // Modes as documented in registry_commands.cpp (init), ca/authority.cpp and workspace.h.
  CHECK(mode_of(dir) == 0700);
  CHECK(mode_of(dir / "registry.db") == 0600);
  CHECK(mode_of(dir / "ca") == 0755);
  CHECK(mode_of(dir / "ca" / "root.key") == 0600);
  CHECK(mode_of(dir / "ca" / "root.crt") == 0644);
  CHECK(mode_of(dir / "ca" / "chain.pem") == 0644);
  CHECK(mode_of(dir / "crl.pem") == 0644);

  auto chain = certificates_from_pem(slurp(dir / "ca" / "chain.pem"));
  REQUIRE(chain.ok());
  CHECK(chain->size() == 1);
  CHECK(crl_number_of(dir / "crl.pem") == 1);
  auto crl_verify =
      onboard::test::run({"/usr/bin/openssl", "crl", "-in", (dir / "crl.pem").string(), "-CAfile",
                          (dir / "ca" / "chain.pem").string(), "-noout"});
  INFO(crl_verify.out << crl_verify.err);
  CHECK(crl_verify.exit_code == 0);
  CHECK(contains(crl_verify.out + crl_verify.err, "verify OK"));
}

TEST_CASE("init with a group lets that group read the registry and its WAL files but not write") {
  const group* g = ::getgrgid(::getegid());
  REQUIRE(g != nullptr);
  const std::string group_name = g->gr_name;
  TempDir base;
  const auto dir = base / "data";
  auto r = init_registry(dir, {"--group", group_name});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "group " + group_name + " may read"));
  // setgid, so that whatever is made inside has the group; the group may not create or remove.
  CHECK(mode_of(dir) == 02750);
  CHECK(mode_of(dir / "ca") == 0750);
  CHECK(mode_of(dir / "ca" / "root.key") == 0600);  // the CA key stays the operator's alone
  // The broker cannot create the -wal and -shm files it reads through: they are there, readable
  // by the group, after onboardctl has exited.
  auto check_registry_files = [&] {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      const auto path = dir / (std::string("registry.db") + suffix);
      INFO(path);
      REQUIRE(std::filesystem::exists(path));
      CHECK(mode_of(path) == 0640);
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK(st.st_gid == g->gr_gid);
      CHECK(st.st_uid == ::geteuid());
    }
  };
  check_registry_files();

  // A write while a reader (the broker) holds the registry open keeps them so, although
  // onboardctl runs under umask 077; and so does one with no reader.
  {
    SQLite::Database reader((dir / "registry.db").string(), SQLite::OPEN_READONLY);
    CHECK(reader.execAndGet("SELECT count(*) FROM devices").getInt() == 0);
    auto add = onboardctl_in(dir, {"device", "register", "dev-1", "--key-alg", "p256", "--key-out",
                                   (base / "dev-1.key").string()});
    INFO(add.err);
    REQUIRE(add.exit_code == 0);
    check_registry_files();
    CHECK(reader.execAndGet("SELECT count(*) FROM devices").getInt() == 1);
  }
  auto disable = onboardctl_in(dir, {"device", "disable", "dev-1"});
  INFO(disable.err);
  REQUIRE(disable.exit_code == 0);
  check_registry_files();
}

namespace {

// errno of open(2) with `flags`, 0 when it succeeded.
int open_errno(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// The extended SQLite result of running `sql` on `db`, 0 when it succeeded.
int sqlite_result(SQLite::Database& db, const std::string& sql) {
  try {
    db.exec(sql);
    return 0;
  } catch (const SQLite::Exception& e) {
    return e.getErrorCode();
  }
}

// What the broker's user gets from the kernel and from SQLite on the registry in `dir`: one
// "name=result" word each, results as errno values or SQLite primary codes, 0 for success.
std::string broker_user_attempts(const std::filesystem::path& dir) {
  const auto db = dir / "registry.db";
  std::string out;
  auto note = [&](const std::string& name, long value) {
    out += name + "=" + std::to_string(value) + " ";
  };
  note("rdwr-db", open_errno(db, O_RDWR));
  note("rdwr-wal", open_errno(dir / "registry.db-wal", O_RDWR));
  note("rdwr-shm", open_errno(dir / "registry.db-shm", O_RDWR));
  note("create", open_errno(dir / "planted", O_WRONLY | O_CREAT | O_EXCL));
  note("rename",
       ::rename((dir / "registry.db-wal").c_str(), (dir / "moved").c_str()) == 0 ? 0 : errno);
  // SQLite asked for write access (no mode=ro): only the kernel can refuse.
  try {
    SQLite::Database rw(db.string(), SQLite::OPEN_READWRITE, 1000);
    note("update", sqlite_result(rw, "UPDATE devices SET status = 'active'"));
    note("insert", sqlite_result(rw,
                                 "INSERT INTO changes (at, kind, subject) VALUES "
                                 "(0, 'device', 'dev-1')"));
    note("checkpoint", sqlite_result(rw, "PRAGMA wal_checkpoint(TRUNCATE)"));
    // Control: the same user reads the registry.
    note("read", rw.execAndGet("SELECT count(*) FROM devices").getInt());
  } catch (const SQLite::Exception& e) {
    out += std::string("sqlite-open-failed: ") + e.what() + " ";
  }
  // The broker's own way in: the plugin's reader.
  auto store = registry::open_sqlite_access(db);
  if (!store.ok()) return out + "access-failed: " + store.error().message;
  auto snapshot = registry::load_snapshot(*store.value());
  if (!snapshot.ok()) return out + "snapshot-failed: " + snapshot.error().message;
  note("snapshot-devices", static_cast<long>(snapshot.value()->device_count()));
  return out;
}

bool has_word(const std::string& text, const std::string& word) {
  return (" " + text).find(" " + word + " ") != std::string::npos;
}

}  // namespace

TEST_CASE("the broker's user reads the registry but cannot write it, its WAL files or its folder") {
  const auto account = onboard::test::broker_account();
  if (!account) {
    WARN("skipped: needs root and the mosquitto user to act as the broker's user");
    return;
  }
  TempDir base;
  REQUIRE(::chmod(base.path().c_str(), 0755) == 0);
  const auto dir = base / "data";
  auto r = init_registry(dir, {"--group", "mosquitto"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto add = onboardctl_in(dir, {"device", "register", "dev-1", "--key-alg", "p256", "--key-out",
                                 (base / "dev-1.key").string()});
  REQUIRE(add.exit_code == 0);
  auto disable = onboardctl_in(dir, {"device", "disable", "dev-1"});
  REQUIRE(disable.exit_code == 0);

  const std::string seen =
      onboard::test::run_as(*account, [&] { return broker_user_attempts(dir); });
  INFO(seen);
  for (const char* word : {"rdwr-db=13", "rdwr-wal=13", "rdwr-shm=13", "create=13", "rename=13",
                           "update=8", "insert=8", "checkpoint=8"}) {
    CHECK(has_word(seen, word));  // EACCES; SQLITE_READONLY
  }
  CHECK(has_word(seen, "read=1"));
  CHECK(has_word(seen, "snapshot-devices=1"));
  CHECK_FALSE(std::filesystem::exists(dir / "planted"));
  // Nothing the broker's user tried changed the device; the owner still writes.
  auto show = onboardctl_in(dir, {"device", "show", "dev-1", "--json"});
  REQUIRE(show.exit_code == 0);
  CHECK(json::parse(show.out)["status"] == "disabled");
  auto enable = onboardctl_in(dir, {"device", "enable", "dev-1"});
  INFO(enable.err);
  CHECK(enable.exit_code == 0);
}

TEST_CASE("a data directory from an older init is tightened by the next onboardctl command") {
  const auto account = onboard::test::broker_account();
  if (!account) {
    WARN("skipped: needs root and the mosquitto user to act as the broker's user");
    return;
  }
  TempDir base;
  REQUIRE(::chmod(base.path().c_str(), 0755) == 0);
  const auto dir = base / "data";
  auto r = init_registry(dir, {"--group", "mosquitto"});
  REQUIRE(r.exit_code == 0);
  auto add = onboardctl_in(dir, {"device", "register", "dev-1", "--key-alg", "p256", "--key-out",
                                 (base / "dev-1.key").string()});
  REQUIRE(add.exit_code == 0);
  // As an older init left it: the folder 2770, the registry 0660, and the WAL files made by the
  // broker, which created them (it had write access to the folder).
  const auto db = dir / "registry.db";
  REQUIRE(::chmod(dir.c_str(), 02770) == 0);
  REQUIRE(::chmod(db.c_str(), 0660) == 0);
  for (const char* suffix : {"-wal", "-shm"}) {
    const auto side = dir / (std::string("registry.db") + suffix);
    REQUIRE(::chown(side.c_str(), account->uid, account->gid) == 0);
    REQUIRE(::chmod(side.c_str(), 0660) == 0);
  }
  // The hole: the broker's user may write the registry and its WAL.
  const std::string before = onboard::test::run_as(*account, [&] {
    return std::to_string(open_errno(db, O_RDWR)) + " " +
           std::to_string(open_errno(dir / "registry.db-wal", O_RDWR));
  });
  REQUIRE(before == "0 0");

  auto list = onboardctl_in(dir, {"device", "list"});
  INFO(list.err);
  REQUIRE(list.exit_code == 0);
  CHECK(mode_of(dir) == 02750);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const auto path = dir / (std::string("registry.db") + suffix);
    INFO(path);
    CHECK(mode_of(path) == 0640);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(st.st_uid == ::geteuid());
    CHECK(st.st_gid == account->gid);
  }
  const std::string after =
      onboard::test::run_as(*account, [&] { return broker_user_attempts(dir); });
  INFO(after);
  for (const char* word : {"rdwr-db=13", "rdwr-wal=13", "rdwr-shm=13", "create=13", "update=8",
                           "checkpoint=8", "read=1", "snapshot-devices=1"}) {
    CHECK(has_word(after, word));
  }
}

TEST_CASE("the broker's user is told which WAL file is missing and one onboardctl run repairs it") {
  const auto account = onboard::test::broker_account();
  if (!account) {
    WARN("skipped: needs root and the mosquitto user to act as the broker's user");
    return;
  }
  TempDir base;
  REQUIRE(::chmod(base.path().c_str(), 0755) == 0);
  const auto dir = base / "data";
  REQUIRE(init_registry(dir, {"--group", "mosquitto"}).exit_code == 0);
  const auto db = dir / "registry.db";
  auto open_as_broker = [&] {
    return onboard::test::run_as(*account, [&]() -> std::string {
      auto store = registry::open_sqlite_access(db);
      return store.ok() ? "opened" : store.error().message;
    });
  };
  REQUIRE(open_as_broker() == "opened");

  // Someone removes the WAL files while nothing has the registry open (a backup script, an
  // sqlite3 shell that deleted them on close): the broker cannot create them.
  for (const char* removed : {"-shm", "-wal"}) {
    INFO("removed " << removed);
    REQUIRE(std::filesystem::remove(db.string() + removed));
    const std::string refused = open_as_broker();
    CHECK(contains(refused, db.string() + removed + " is missing"));
    CHECK(contains(refused, "onboardctl"));
    CHECK_FALSE(std::filesystem::exists(db.string() + removed));  // nothing was created

    auto list = onboardctl_in(dir, {"device", "list"});
    INFO(list.err);
    REQUIRE(list.exit_code == 0);
    CHECK(mode_of(db.string() + removed) == 0640);
    CHECK(open_as_broker() == "opened");
  }
}

TEST_CASE(
    "an operator who is not root is told to ask root when the broker's user owns a WAL file") {
  const auto account = onboard::test::broker_account();
  const passwd* nobody = ::getpwnam("nobody");
  if (!account || nobody == nullptr) {
    WARN("skipped: needs root and the users mosquitto and nobody");
    return;
  }
  TempDir base;
  REQUIRE(::chmod(base.path().c_str(), 0755) == 0);
  const auto dir = base / "data";
  std::filesystem::create_directory(dir);
  REQUIRE(::chown(dir.c_str(), nobody->pw_uid, nobody->pw_gid) == 0);
  auto as_operator = [&](Args args) {
    // In the broker's group, as an operator sharing the registry with it had to be.
    args.insert(args.begin(), {"/usr/sbin/runuser", "-u", "nobody", "-g", "mosquitto", "--",
                               ONBOARDCTL_PATH, "--data-dir", dir.string()});
    return onboard::test::run(args);
  };
  auto init = as_operator({"init", "--key-alg", "p256", "--no-group"});
  INFO(init.err);
  REQUIRE(init.exit_code == 0);
  // An older installation: the operator's registry shared with group mosquitto for writing, and
  // WAL files the broker created.
  const auto db = dir / "registry.db";
  REQUIRE(::chown(dir.c_str(), static_cast<uid_t>(-1), account->gid) == 0);
  REQUIRE(::chmod(dir.c_str(), 02770) == 0);
  REQUIRE(::chown(db.c_str(), static_cast<uid_t>(-1), account->gid) == 0);
  REQUIRE(::chmod(db.c_str(), 0660) == 0);
  for (const char* suffix : {"-wal", "-shm"}) {
    const auto side = db.string() + suffix;
    REQUIRE(::chown(side.c_str(), account->uid, account->gid) == 0);
    REQUIRE(::chmod(side.c_str(), 0660) == 0);
  }

  // The operator tightens what it owns, and refuses to go on with WAL files the broker could
  // still write, naming the fix.
  auto refused = as_operator({"device", "list"});
  CHECK(refused.exit_code == 6);
  CHECK(one_line_error(refused));
  CHECK(contains(refused.err, "belongs to another user"));
  CHECK(contains(refused.err, "chown --reference=" + db.string()));
  CHECK(mode_of(dir) == 02750);
  CHECK(mode_of(db) == 0640);

  // Root fixes it, after which the operator works again.
  auto fixed = onboardctl_in(dir, {"device", "list"});
  INFO(fixed.err);
  REQUIRE(fixed.exit_code == 0);
  for (const char* suffix : {"-wal", "-shm"}) {
    const auto side = db.string() + suffix;
    INFO(side);
    struct stat st {};
    REQUIRE(::stat(side.c_str(), &st) == 0);
    CHECK(st.st_uid == nobody->pw_uid);
    CHECK(st.st_gid == account->gid);
    CHECK(mode_of(side) == 0640);
  }
  auto again = as_operator({"device", "list"});
  INFO(again.err);
  CHECK(again.exit_code == 0);
}

TEST_CASE("a registry backup and restore leave the WAL files the broker reads in place") {
  const group* g = ::getgrgid(::getegid());
  REQUIRE(g != nullptr);
  TempDir base;
  const auto dir = base / "data";
  REQUIRE(init_registry(dir, {"--group", g->gr_name}).exit_code == 0);
  auto add = onboardctl_in(dir, {"device", "register", "dev-1", "--key-alg", "p256", "--key-out",
                                 (base / "dev-1.key").string()});
  REQUIRE(add.exit_code == 0);
  auto check_registry_files = [&] {
    for (const char* suffix : {"", "-wal", "-shm"}) {
      const auto path = dir / (std::string("registry.db") + suffix);
      INFO(path);
      REQUIRE(std::filesystem::exists(path));
      CHECK(mode_of(path) == 0640);
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK(st.st_gid == g->gr_gid);
    }
    CHECK(mode_of(dir) == 02750);
  };
  const auto backup = base / "backup.db";
  auto saved = onboardctl_in(dir, {"registry", "backup", backup.string()});
  INFO(saved.err);
  REQUIRE(saved.exit_code == 0);
  check_registry_files();
  auto restored = onboardctl_in(dir, {"registry", "restore", backup.string(), "--yes"});
  INFO(restored.err);
  REQUIRE(restored.exit_code == 0);
  check_registry_files();
}

TEST_CASE("init warns when a folder above the data directory keeps the broker's group out") {
  const group* g = ::getgrgid(::getegid());
  REQUIRE(g != nullptr);
  TempDir base;
  const auto parent = base / "private";
  std::filesystem::create_directory(parent);

  // A 0700 folder owned by another group: the broker, a member of the group, cannot pass it.
  REQUIRE(::chmod(parent.c_str(), 0700) == 0);
  REQUIRE(::chmod(base.path().c_str(), 0755) == 0);
  auto blocked = init_registry(parent / "data", {"--group", g->gr_name});
  INFO(blocked.err);
  REQUIRE(blocked.exit_code == 0);  // the operator may still fix the folder afterwards
  CHECK(contains(blocked.err, "warning: group " + std::string(g->gr_name) + " cannot reach"));
  CHECK(contains(blocked.err, parent.string() + " is not searchable"));

  // The same layout with the folder searchable by everyone: no warning.
  TempDir base2;
  const auto open = base2 / "shared";
  std::filesystem::create_directory(open);
  REQUIRE(::chmod(open.c_str(), 0711) == 0);
  REQUIRE(::chmod(base2.path().c_str(), 0755) == 0);
  auto fine = init_registry(open / "data", {"--group", g->gr_name});
  INFO(fine.err);
  REQUIRE(fine.exit_code == 0);
  CHECK_FALSE(contains(fine.err, "warning"));
}

TEST_CASE("a second init refuses and changes nothing") {
  Fleet fleet;
  fleet.require_add("dev-1");
  const auto registry = slurp(fleet.registry());
  const auto key = slurp(fleet.data / "ca" / "root.key");
  const auto crl = slurp(fleet.crl());
  auto again = init_registry(fleet.data.path());
  CHECK(again.exit_code == 5);
  CHECK(contains(again.err, "a registry already exists"));
  CHECK(one_line_error(again));
  const bool registry_untouched = slurp(fleet.registry()) == registry;  // binary: not printed
  CHECK(registry_untouched);
  CHECK(slurp(fleet.data / "ca" / "root.key") == key);
  CHECK(slurp(fleet.crl()) == crl);
  CHECK(fleet.has_device("dev-1"));
}

TEST_CASE("init with a group that does not exist fails before creating anything") {
  TempDir base;
  auto r = init_registry(base / "data", {"--group", "nosuchgroup"});
  CHECK(r.exit_code == 4);
  CHECK(contains(r.err, "group 'nosuchgroup' does not exist"));
  CHECK(one_line_error(r));
  CHECK_FALSE(std::filesystem::exists(base / "data"));
}

TEST_CASE("the data directory comes from ONBOARD_DATA_DIR when --data-dir is absent") {
  TempDir base;
  const auto dir = base / "from-env";
  auto r = onboard::test::run({ONBOARDCTL_PATH, "init", "--key-alg", "p256", "--no-group"}, {},
                              {{"ONBOARD_DATA_DIR", dir.string()}});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(std::filesystem::exists(dir / "registry.db"));
  auto list = onboard::test::run({ONBOARDCTL_PATH, "device", "list"}, {},
                                 {{"ONBOARD_DATA_DIR", dir.string()}});
  CHECK(list.exit_code == 0);
}

TEST_CASE("serve refuses a renewal grace period outside 1s to 365d before it opens anything") {
  TempDir base;
  const auto missing = (base / "no-data-dir").string();
  for (const char* grace : {"0s", "366d", "soon"}) {
    auto r = onboard::test::run({ONBOARDCTL_PATH, "--data-dir", missing, "serve", "--listen",
                                 "127.0.0.1:0", "--renewal-grace", grace});
    INFO(grace << ": " << r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--renewal-grace"));
  }
  // A good one passes that check (the positive control): it then fails on the missing data
  // directory, not on the option.
  auto good = onboard::test::run({ONBOARDCTL_PATH, "--data-dir", missing, "serve", "--listen",
                                  "127.0.0.1:0", "--renewal-grace", "2s"});
  CHECK(good.exit_code != 0);
  CHECK_FALSE(contains(good.err, "--renewal-grace"));
}

TEST_CASE("serve refuses a renewal minimum age outside 0 to 365d before it opens anything") {
  TempDir base;
  const auto missing = (base / "no-data-dir").string();
  for (const char* age : {"366d", "-1h", "soon", "1"}) {
    auto r = onboard::test::run({ONBOARDCTL_PATH, "--data-dir", missing, "serve", "--listen",
                                 "127.0.0.1:0", "--renewal-min-age", age});
    INFO(age << ": " << r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--renewal-min-age"));
  }
  // Good ones pass that check (the positive control), 0 among them: they then fail on the
  // missing data directory, not on the option.
  for (const char* age : {"0", "0s", "2h", "365d"}) {
    auto good = onboard::test::run({ONBOARDCTL_PATH, "--data-dir", missing, "serve", "--listen",
                                    "127.0.0.1:0", "--renewal-min-age", age});
    INFO(age << ": " << good.err);
    CHECK(good.exit_code != 0);
    CHECK_FALSE(contains(good.err, "--renewal-min-age"));
  }
}

// ---- device register ---------------------------------------------------------------------------

TEST_CASE("register with a device's CSR issues a certificate for the device's own key") {
  Fleet fleet;
  ossl::Ptr<EVP_PKEY> key;
  write(fleet.out / "dev.csr", device_csr("sensor-1", &key));
  auto r = fleet({"device", "register", "sensor-1", "--csr", fleet.file("dev.csr"), "--cert-out",
                  fleet.file("sensor-1.crt"), "--type", "sensor", "--location", "hall 2",
                  "--firmware", "1.4.2", "--metadata", R"({"site": "north", "rack": 7})"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "registered sensor-1"));
  CHECK(contains(r.out, "(held by the device)"));

  auto cert = certificate_from_pem(slurp(fleet.out / "sensor-1.crt"));
  REQUIRE(cert.ok());
  CHECK(X509_check_private_key(cert->get(), key.get()) == 1);
  CHECK(mode_of(fleet.out / "sensor-1.crt") == 0644);

  auto device = fleet.show("sensor-1");
  CHECK(device["type"] == "sensor");
  CHECK(device["location"] == "hall 2");
  CHECK(device["firmware"] == "1.4.2");
  CHECK(device["metadata"]["site"] == "north");
  CHECK(device["metadata"]["rack"] == 7);
  REQUIRE(device["certificates"].size() == 1);
  CHECK(device["certificates"][0]["serial"].get<std::string>() ==
        describe_certificate(cert->get()).serial_hex);
}

TEST_CASE("register refuses a CSR whose CN is not the device id, and registers nothing") {
  Fleet fleet;
  write(fleet.out / "dev.csr", device_csr("someone-else"));
  auto r = fleet({"device", "register", "sensor-1", "--csr", fleet.file("dev.csr"), "--cert-out",
                  fleet.file("sensor-1.crt")});
  CHECK(r.exit_code == 3);
  CHECK(contains(r.err, "the CSR's CN is 'someone-else', not the device id 'sensor-1'"));
  CHECK(one_line_error(r));
  CHECK_FALSE(fleet.has_device("sensor-1"));
  CHECK_FALSE(std::filesystem::exists(fleet.out / "sensor-1.crt"));
}

TEST_CASE("register with a key made here writes the key 0600 next to its certificate") {
  Fleet fleet;
  auto r = fleet.add("dev-1", {"--cert-out", fleet.file("dev-1.crt")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "(made here)"));
  CHECK(contains(r.out, "wrote        " + fleet.file("dev-1.key")));
  CHECK(mode_of(fleet.out / "dev-1.key") == 0600);
  CHECK(mode_of(fleet.out / "dev-1.crt") == 0644);
  auto key = private_key_from_pem(slurp(fleet.out / "dev-1.key"));
  auto cert = certificate_from_pem(slurp(fleet.out / "dev-1.crt"));
  REQUIRE(key.ok());
  REQUIRE(cert.ok());
  CHECK(X509_check_private_key(cert->get(), key->get()) == 1);
  CHECK(describe_certificate(cert->get()).subject == "CN=dev-1");
}

TEST_CASE("register refuses to make a key that would go nowhere") {
  Fleet fleet;
  auto r = fleet(
      {"device", "register", "dev-1", "--key-alg", "p256", "--cert-out", fleet.file("dev-1.crt")});
  CHECK(r.exit_code == 3);
  CHECK(contains(r.err, "give --key-out FILE"));
  CHECK(one_line_error(r));
  CHECK_FALSE(fleet.has_device("dev-1"));
  CHECK(files_in(fleet.out.path()) == 0);
}

TEST_CASE("registering a device twice is a conflict that leaves the first one untouched") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--cert-out", fleet.file("dev-1.crt")});
  const auto key = slurp(fleet.out / "dev-1.key");
  const auto cert = slurp(fleet.out / "dev-1.crt");
  const auto before = fleet.show("dev-1");
  const auto audit_rows = fleet.audit().size();

  for (bool force : {false, true}) {
    INFO("--force " << force);
    Args extra{"--cert-out", fleet.file("dev-1.crt")};
    if (force) extra.push_back("--force");
    auto again = fleet.add("dev-1", extra);
    CHECK(again.exit_code == 5);
    CHECK(contains(again.err, "device dev-1 already exists"));
    CHECK(one_line_error(again));
  }
  CHECK(slurp(fleet.out / "dev-1.key") == key);
  CHECK(slurp(fleet.out / "dev-1.crt") == cert);
  CHECK(fleet.show("dev-1") == before);
  CHECK(fleet.audit().size() == audit_rows);
}

TEST_CASE("an invalid device id is refused with the reason") {
  Fleet fleet;
  struct Case {
    std::string id, reason;
  };
  const std::vector<Case> cases{
      {"a/b", "device id contains '/'"},
      {"a b", "device id contains a space"},
      {std::string(65, 'a'), "device id is 65 characters long; the limit is 64"},
      {"$SYS", "device id contains '$'"},
      {"a+b", "device id contains '+'"},
      {"a#b", "device id contains '#'"},
      {"_dev", "must start with a letter or a digit"},
      {"", "device id is empty"},
  };
  for (const auto& c : cases) {
    INFO("id '" << c.id << "'");
    auto r = fleet.add(c.id);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, c.reason));
    CHECK(one_line_error(r));
  }
  auto type = fleet.add("dev-1", {"--type", "a/b"});
  CHECK(type.exit_code == 3);
  CHECK(contains(type.err, "--type: group name contains '/'"));
  CHECK(fleet.device_count() == 0);
  CHECK(files_in(fleet.out.path()) == 0);
  // 64 characters is the limit, not one past it.
  fleet.require_add(std::string(64, 'a'));
}

TEST_CASE("register refuses metadata that is not a JSON object") {
  Fleet fleet;
  for (const char* metadata : {"{bad", "[1, 2]", "\"text\"", ""}) {
    INFO(metadata);
    auto r = fleet.add("dev-1", {"--metadata", metadata});
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--metadata: "));
    CHECK(one_line_error(r));
  }
  CHECK_FALSE(fleet.has_device("dev-1"));
  CHECK(files_in(fleet.out.path()) == 0);
}

TEST_CASE("register keeps existing output files unless --force, and then registers nothing") {
  Fleet fleet;
  write(fleet.out / "dev-1.crt", "keep me");
  auto refused = fleet.add("dev-1", {"--cert-out", fleet.file("dev-1.crt")});
  CHECK(refused.exit_code == 5);
  CHECK(contains(refused.err, fleet.file("dev-1.crt") + " exists already; pass --force"));
  CHECK(one_line_error(refused));
  CHECK(slurp(fleet.out / "dev-1.crt") == "keep me");
  CHECK_FALSE(std::filesystem::exists(fleet.out / "dev-1.key"));
  CHECK_FALSE(fleet.has_device("dev-1"));

  auto forced = fleet.add("dev-1", {"--cert-out", fleet.file("dev-1.crt"), "--force"});
  INFO(forced.err);
  REQUIRE(forced.exit_code == 0);
  CHECK(slurp(fleet.out / "dev-1.crt").starts_with("-----BEGIN CERTIFICATE-----"));
  CHECK(fleet.has_device("dev-1"));
}

TEST_CASE("register into a missing or unwritable directory fails with nothing registered") {
  Fleet fleet;
  write(fleet.out / "a-file", "not a directory");
  std::vector<std::pair<std::string, Args>> cases{
      {"key into a missing directory", {"--key-out", (fleet.out / "missing" / "k").string()}},
      {"certificate into a missing directory, after the key",
       {"--key-out", fleet.file("dev-1.key"), "--cert-out",
        (fleet.out / "missing" / "c").string()}},
      {"certificate below a regular file",
       {"--key-out", fleet.file("dev-1.key"), "--cert-out", (fleet.out / "a-file" / "c").string()}},
  };
  if (::geteuid() != 0) {  // root writes anywhere; the permission case needs an ordinary user
    std::filesystem::create_directory(fleet.out / "locked");
    ::chmod((fleet.out / "locked").c_str(), 0500);
    cases.push_back(
        {"key into a read-only directory", {"--key-out", (fleet.out / "locked" / "k").string()}});
  }
  for (const auto& [name, outputs] : cases) {
    INFO(name);
    Args args{"device", "register", "dev-1", "--key-alg", "p256"};
    args.insert(args.end(), outputs.begin(), outputs.end());
    auto r = fleet(args);
    CHECK(r.exit_code == 6);
    CHECK(one_line_error(r));
    CHECK_FALSE(fleet.has_device("dev-1"));
    CHECK_FALSE(std::filesystem::exists(fleet.out / "dev-1.key"));  // written, then taken back
  }
  CHECK(files_in(fleet.out.path()) == (::geteuid() != 0 ? 2u : 1u));
}

TEST_CASE("a data directory the operator cannot write is reported as such, and nothing changes") {
  Fleet fleet;
  fleet.require_add("dev-1");
  // Root writes anywhere: as root, run the command as user nobody, who may read but not write.
  const bool as_root = ::geteuid() == 0;
  if (as_root) {
    for (const auto& dir : {fleet.data.path(), fleet.data / "ca"}) {
      REQUIRE(::chmod(dir.c_str(), 0755) == 0);
    }
    for (const char* file : {"registry.db", "crl.pem"}) {
      REQUIRE(::chmod((fleet.data / file).c_str(), 0644) == 0);
    }
  } else {
    REQUIRE(::chmod(fleet.data.path().c_str(), 0500) == 0);
    REQUIRE(::chmod(fleet.registry().c_str(), 0400) == 0);
  }
  auto as_other = [&](Args args) {
    args.insert(args.begin(), {ONBOARDCTL_PATH, "--data-dir", fleet.data.path().string()});
    if (as_root) args.insert(args.begin(), {"/usr/sbin/runuser", "-u", "nobody", "--"});
    return onboard::test::run(args);
  };
  for (const Args& command :
       {Args{"device", "disable", "dev-1"},
        Args{"acl", "grant", "--device", "dev-1", "--access", "read", "--topic", "x/#"}}) {
    INFO(command[0] << " " << command[1]);
    auto r = as_other(command);
    CHECK(r.exit_code == 6);
    CHECK(one_line_error(r));
    CHECK((contains(r.err, "read-only") || contains(r.err, "permission") ||
           contains(r.err, "cannot be opened")));
  }
  if (!as_root) {
    ::chmod(fleet.data.path().c_str(), 0700);
    ::chmod(fleet.registry().c_str(), 0600);
  }
  CHECK(fleet.show("dev-1")["status"] == "active");
  CHECK(fleet.show("dev-1")["rules"].size() == 1);
}

TEST_CASE("a failed register with --force leaves the files it would have replaced as they were") {
  Fleet fleet;
  write(fleet.out / "dev-1.key", "the operator's old key");
  ::chmod((fleet.out / "dev-1.key").c_str(), 0640);
  auto r = fleet.add("dev-1", {"--cert-out", (fleet.out / "missing" / "c").string(), "--force"});
  CHECK(r.exit_code == 6);
  CHECK(contains(r.err, "missing"));
  CHECK_FALSE(fleet.has_device("dev-1"));
  REQUIRE(std::filesystem::exists(fleet.out / "dev-1.key"));
  CHECK(slurp(fleet.out / "dev-1.key") == "the operator's old key");
  CHECK(mode_of(fleet.out / "dev-1.key") == 0640);
  CHECK(files_in(fleet.out.path()) == 1);
}

TEST_CASE("register refuses to write the key and the certificate into the same file") {
  Fleet fleet;
  for (bool force : {false, true}) {
    INFO("--force " << force);
    Args extra{"--cert-out", (fleet.out / "." / "dev-1.key").string()};
    if (force) extra.push_back("--force");
    auto r = fleet.add("dev-1", extra);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "--key-out and --cert-out name the same file"));
    CHECK_FALSE(fleet.has_device("dev-1"));
    CHECK(files_in(fleet.out.path()) == 0);
  }
}

// ---- device list and show ----------------------------------------------------------------------

TEST_CASE("device list prints an aligned table, JSON for scripts, and filters") {
  Fleet fleet;
  fleet.require_add("gw-1", {"--type", "gateway", "--location", "roof"});
  fleet.require_add("sensor-1", {"--type", "sensor", "--firmware", "2.0"});
  fleet.require_add("sensor-2", {"--type", "sensor"});
  REQUIRE(fleet({"device", "disable", "sensor-2"}).exit_code == 0);

  auto table = fleet({"device", "list"});
  REQUIRE(table.exit_code == 0);
  std::vector<std::string> lines;
  for (std::size_t at = 0, end; (end = table.out.find('\n', at)) != std::string::npos;
       at = end + 1) {
    lines.push_back(table.out.substr(at, end - at));
  }
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].starts_with("ID "));
  for (const char* column : {"STATUS", "TYPE", "LOCATION", "FIRMWARE", "CREATED"}) {
    CHECK(contains(lines[0], column));
  }
  CHECK(lines[1].starts_with("gw-1 "));
  CHECK(lines[3].starts_with("sensor-2 "));
  // Aligned: every row's status starts under the STATUS header.
  const auto status_at = lines[0].find("STATUS");
  CHECK(lines[1].substr(status_at, 6) == "active");
  CHECK(lines[3].substr(status_at, 8) == "disabled");

  auto as_json = fleet({"device", "list", "--json"});
  REQUIRE(as_json.exit_code == 0);
  auto parsed = json::parse(as_json.out);
  REQUIRE(parsed["devices"].size() == 3);
  CHECK(parsed["devices"][0]["location"] == "roof");
  CHECK(parsed["devices"][1]["firmware"] == "2.0");
  CHECK(parsed["next_after"].is_null());

  auto ids = [&](const Args& filter) {
    Args args{"device", "list", "--json"};
    args.insert(args.end(), filter.begin(), filter.end());
    auto r = fleet(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto listed = json::parse(r.out);
    std::vector<std::string> out;
    for (const auto& d : listed["devices"]) out.push_back(d["id"].get<std::string>());
    return out;
  };
  CHECK(ids({"--type", "sensor"}) == std::vector<std::string>{"sensor-1", "sensor-2"});
  CHECK(ids({"--status", "disabled"}) == std::vector<std::string>{"sensor-2"});
  CHECK(ids({"--status", "active", "--type", "sensor"}) == std::vector<std::string>{"sensor-1"});
  CHECK(ids({"--type", "nosuchtype"}).empty());

  auto negative = fleet({"device", "list", "--limit", "-5"});
  CHECK(negative.exit_code == 2);

  auto bad_status = fleet({"device", "list", "--status", "asleep"});
  CHECK(bad_status.exit_code == 3);
  CHECK(contains(bad_status.err, "--status must be active, disabled or revoked"));
}

TEST_CASE("device list pages walk every device exactly once") {
  Fleet fleet;
  std::set<std::string> registered;
  for (int i = 0; i < 25; ++i) {
    const std::string id = "dev-" + std::string(i < 10 ? "0" : "") + std::to_string(i);
    fleet.require_add(id, {"--type", i % 2 == 0 ? "even" : "odd"});
    registered.insert(id);
  }

  std::vector<std::string> seen;
  std::vector<std::size_t> page_sizes;
  json after = "";
  while (!after.is_null()) {
    auto r =
        fleet({"device", "list", "--json", "--limit", "10", "--after", after.get<std::string>()});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto page = json::parse(r.out);
    page_sizes.push_back(page["devices"].size());
    for (const auto& d : page["devices"]) seen.push_back(d["id"].get<std::string>());
    after = page["next_after"];
    REQUIRE(page_sizes.size() < 10);  // no endless walk
  }
  CHECK(page_sizes == std::vector<std::size_t>{10, 10, 5});
  CHECK(seen == std::vector<std::string>(registered.begin(), registered.end()));

  auto table = fleet({"device", "list", "--limit", "10", "--after", "dev-09", "--type", "odd"});
  REQUIRE(table.exit_code == 0);
  CHECK(contains(table.out, "dev-11 "));
  CHECK_FALSE(contains(table.out, "dev-09 "));
  CHECK_FALSE(contains(table.out, "dev-10 "));
  CHECK_FALSE(contains(table.out, "(more:"));  // only 7 odd devices follow dev-09
  auto first = fleet({"device", "list", "--limit", "10"});
  CHECK(contains(first.out, "(more: --after dev-09)"));
}

TEST_CASE("device show tells the device, its certificate and its effective rules") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--name", "Boiler room", "--type", "sensor"});
  auto human = fleet({"device", "show", "dev-1"});
  INFO(human.err);
  REQUIRE(human.exit_code == 0);
  CHECK(contains(human.out, "device    dev-1 (Boiler room)"));
  CHECK(contains(human.out, "status    active"));
  CHECK(contains(human.out, "type      sensor"));
  CHECK(contains(human.out, "group default"));
  CHECK(contains(human.out, "devices/%d/#"));

  auto d = fleet.show("dev-1");
  CHECK(d["id"] == "dev-1");
  CHECK(d["name"] == "Boiler room");
  CHECK(d["status"] == "active");
  REQUIRE(d["certificates"].size() == 1);
  const auto& c = d["certificates"][0];
  CHECK(c["status"] == "active");
  CHECK(c["subject"] == "CN=dev-1");
  auto cert = certificate_from_pem(c["pem"].get<std::string>());
  REQUIRE(cert.ok());
  CHECK(describe_certificate(cert->get()).serial_hex == c["serial"].get<std::string>());
  CHECK(human.out.find(c["serial"].get<std::string>()) != std::string::npos);
  REQUIRE(d["rules"].size() == 1);
  CHECK(d["rules"][0] == json{{"id", 1},
                              {"subject_kind", "group"},
                              {"subject", "default"},
                              {"effect", "allow"},
                              {"access", "readwrite"},
                              {"pattern", "devices/%d/#"},
                              {"priority", 0}});
}

TEST_CASE("device commands on an unknown or malformed device id say so") {
  Fleet fleet;
  for (const Args& args : std::vector<Args>{
           {"device", "show", "ghost"},
           {"device", "disable", "ghost"},
           {"device", "enable", "ghost"},
           {"device", "revoke", "ghost"},
           {"cert", "renew", "ghost", "--key-alg", "p256", "--key-out", fleet.file("ghost.key")},
           {"acl", "list", "--device", "ghost"},
           {"acl", "check", "ghost", "publish", "a"}}) {
    INFO(args[0] << " " << args[1]);
    auto r = fleet(args);
    CHECK(r.exit_code == 4);
    CHECK(contains(r.err, "device ghost does not exist"));
    CHECK(one_line_error(r));
  }
  auto malformed = fleet({"device", "show", "a/b"});
  CHECK(malformed.exit_code == 3);
  CHECK(contains(malformed.err, "'/'"));
  CHECK(files_in(fleet.out.path()) == 0);
}

// ---- disable, enable, revoke, renew ------------------------------------------------------------

TEST_CASE("disable and enable say when nothing changed and write no audit row then") {
  Fleet fleet;
  fleet.require_add("dev-1");
  auto step = [&](const char* verb, const std::string& expected) {
    const auto rows = fleet.audit().size();
    auto r = fleet({"device", verb, "dev-1"});
    INFO(verb << ": " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == expected + "\n");
    return fleet.audit().size() - rows;
  };
  CHECK(step("disable", "dev-1 disabled") == 1);
  CHECK(fleet.show("dev-1")["status"] == "disabled");
  CHECK(step("disable", "dev-1 was already disabled") == 0);
  CHECK(step("enable", "dev-1 enabled") == 1);
  CHECK(step("enable", "dev-1 was already enabled") == 0);
  CHECK(fleet.show("dev-1")["status"] == "active");
}

TEST_CASE("device update changes the given fields, audited, and a new type brings its rules") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--type", "sensor", "--location", "lab", "--firmware", "1.0.0"});
  REQUIRE(fleet({"acl", "grant", "--group", "valve", "--access", "publish", "--topic", "valves/%d"})
              .exit_code == 4);  // no such group yet: the type change below creates it
  auto decision = [&](const std::string& topic) {
    auto r = fleet({"acl", "check", "dev-1", "publish", topic, "--json"});
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out)["decision"].get<std::string>();
  };
  CHECK(decision("valves/dev-1") == "deny");

  const auto rows = fleet.audit().size();
  auto r = fleet({"device", "update", "dev-1", "--name", "Boiler valve", "--type", "valve",
                  "--location", "basement", "--firmware", "2.0.0", "--metadata", R"({"rack": 4})"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.starts_with("updated dev-1\n"));
  json shown = fleet.show("dev-1");
  CHECK(shown["name"] == "Boiler valve");
  CHECK(shown["type"] == "valve");
  CHECK(shown["location"] == "basement");
  CHECK(shown["firmware"] == "2.0.0");
  CHECK(shown["metadata"] == json{{"rack", 4}});
  CHECK(fleet.audit().size() == rows + 1);
  const json last = fleet.audit().back();
  CHECK(last["action"] == "device.update");
  CHECK(last["details"]["changed"]["location"] == json{{"from", "lab"}, {"to", "basement"}});
  CHECK(last["details"]["created_group"] == true);

  // The new type's group exists now; its rules apply to the device.
  REQUIRE(fleet({"acl", "grant", "--group", "valve", "--access", "publish", "--topic", "valves/%d"})
              .exit_code == 0);
  CHECK(decision("valves/dev-1") == "allow");

  // One field alone; the others stay. The same value again writes nothing.
  REQUIRE(fleet({"device", "update", "dev-1", "--location", "roof"}).exit_code == 0);
  CHECK(fleet.show("dev-1")["firmware"] == "2.0.0");
  const auto settled = fleet.audit().size();
  REQUIRE(fleet({"device", "update", "dev-1", "--location", "roof"}).exit_code == 0);
  CHECK(fleet.audit().size() == settled);
}

TEST_CASE("device update refuses no change, bad values, unknown and revoked devices") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--location", "lab"});
  fleet.require_add("dev-2");
  REQUIRE(fleet({"device", "revoke", "dev-2"}).exit_code == 0);
  const auto rows = fleet.audit().size();
  struct Case {
    Args args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"device", "update", "dev-1"}, 2, "nothing to update"},
      {{"device", "update", "dev-1", "--type", "a b"}, 3, "--type:"},
      {{"device", "update", "dev-1", "--metadata", "[1]"}, 3, "--metadata:"},
      {{"device", "update", "dev-1", "--metadata", "{"}, 3, "--metadata:"},
      {{"device", "update", "ghost", "--location", "x"}, 4, "ghost"},
      {{"device", "update", "a/b", "--location", "x"}, 3, ""},
      {{"device", "update", "dev-2", "--location", "x"}, 5, "revoked"},
  };
  for (const auto& c : cases) {
    auto r = fleet(c.args);
    INFO(c.args[2] << " " << (c.args.size() > 3 ? c.args[3] : "") << ": " << r.err);
    CHECK(r.exit_code == c.exit_code);
    CHECK(r.err.starts_with("onboardctl: "));
    CHECK(contains(r.err, c.message));
    CHECK(r.out.empty());
  }
  CHECK(fleet.audit().size() == rows);
  CHECK(fleet.show("dev-1")["location"] == "lab");
}

TEST_CASE("register and update refuse control characters and bad UTF-8 and over-long free text") {
  Fleet fleet;
  // A positive control: ordinary text, non-ASCII UTF-8 included, at the limits.
  fleet.require_add(
      "dev-1", {"--name", "Kessel Zürich 🔥", "--location", "Zürich, Halle 3", "--firmware",
                std::string(64, 'f'), "--metadata", R"({"Gebäude": "Süd", "racks": [1, "A-3"]})"});
  CHECK(fleet.show("dev-1")["location"] == "Zürich, Halle 3");
  CHECK(fleet.show("dev-1")["name"] == "Kessel Zürich 🔥");
  fleet.require_add("dev-2", {"--location", std::string(128, 'x')});

  struct Case {
    std::string option, value, field;
  };
  const std::vector<Case> cases = {
      {"--location", "lab\x1b[2J\x1b[31mred", "location"},  // clears the screen, recolours
      {"--location", "lab\ndev-9  active", "location"},     // forges a table row
      {"--name", "a\x01b", "name"},
      {"--name", "bell\x07", "name"},
      {"--firmware", "1.0\x7f", "firmware"},
      {"--firmware",
       "1.0\xc2\x9b"
       "2J",
       "firmware"},                             // C1 CSI, as UTF-8
      {"--location", "Z\xfcrich", "location"},  // Latin-1, not UTF-8
      {"--location", "\xc0\xaf", "location"},   // an overlong '/'
      {"--name", std::string(129, 'n'), "name"},
      {"--location", std::string(129, 'l'), "location"},
      {"--firmware", std::string(65, 'f'), "firmware"},
      {"--metadata", R"({"note": "a\u001b[2Jb"})", "metadata"},
      {"--metadata", R"({"a\nb": 1})", "metadata"},
      {"--metadata", R"({"n": ")" + std::string(4100, 'm') + R"("})", "metadata"},
  };
  const auto rows = fleet.audit().size();
  for (const auto& c : cases) {
    INFO(c.option << " " << c.field << " (" << c.value.size() << " bytes)");
    auto r = fleet.add("bad-1", {c.option, c.value});
    INFO(r.err);
    CHECK(r.exit_code == 3);
    CHECK(one_line_error(r));
    CHECK(contains(r.err, c.field));
    CHECK(r.err.find('\x1b') == std::string::npos);  // the message never echoes the text
    CHECK(!fleet.has_device("bad-1"));

    auto u = fleet({"device", "update", "dev-1", c.option, c.value});
    INFO(u.err);
    CHECK(u.exit_code == 3);
    CHECK(one_line_error(u));
    CHECK(contains(u.err, c.field));
    CHECK(u.out.empty());
  }
  CHECK(!std::filesystem::exists(fleet.file("bad-1.key")));
  CHECK(fleet.audit().size() == rows);
  auto kept = fleet.show("dev-1");
  CHECK(kept["location"] == "Zürich, Halle 3");
  CHECK(kept["firmware"] == std::string(64, 'f'));
  // And an update with good text still works.
  auto good = fleet({"device", "update", "dev-1", "--location", "Genève"});
  INFO(good.err);
  CHECK(good.exit_code == 0);
  CHECK(fleet.show("dev-1")["location"] == "Genève");
}

TEST_CASE("free text stored before the checks is printed escaped by device list and show") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--location", "lab"});
  fleet.require_add("dev-2", {"--location", "roof"});
  {
    // As an older version would have stored it: an ESC sequence and a forged row.
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE);
    SQLite::Statement update(db, "UPDATE devices SET location = ?, name = ? WHERE id = 'dev-1'");
    update.bind(1, std::string("lab\x1b[2J\x1b[31m\ndev-9  active"));
    update.bind(2, std::string("boiler\xc2\x9b"));
    REQUIRE(update.exec() == 1);
  }
  auto list = fleet({"device", "list"});
  INFO(list.err);
  REQUIRE(list.exit_code == 0);
  CHECK(list.out.find('\x1b') == std::string::npos);
  CHECK(contains(list.out, "lab\\x1b[2J\\x1b[31m\\x0adev-9  active"));
  // The header, dev-1 and dev-2: no forged third row.
  CHECK(std::count(list.out.begin(), list.out.end(), '\n') == 3);
  CHECK(contains(list.out, "roof"));  // the other row is untouched

  auto show = fleet({"device", "show", "dev-1"});
  INFO(show.err);
  REQUIRE(show.exit_code == 0);
  CHECK(show.out.find('\x1b') == std::string::npos);
  CHECK(show.out.find("\xc2\x9b") == std::string::npos);
  CHECK(contains(show.out, "\\u009b"));
  CHECK(contains(show.out, "location  lab\\x1b[2J"));
  // JSON keeps the stored value exactly (escaped by JSON itself).
  CHECK(fleet.show("dev-1")["location"] == "lab\x1b[2J\x1b[31m\ndev-9  active");
}

TEST_CASE("revoke puts the certificate on a fresh CRL, once") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--cert-out", fleet.file("dev-1.crt")});
  fleet.require_add("dev-2", {"--cert-out", fleet.file("dev-2.crt")});
  const std::string serial = fleet.show("dev-1")["certificates"][0]["serial"];
  const auto number_before = crl_number_of(fleet.crl());

  auto r = fleet({"device", "revoke", "dev-1", "--reason", "keyCompromise"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "revoked dev-1 (1 certificate)"));
  CHECK(crl_number_of(fleet.crl()) > number_before);
  CHECK(mode_of(fleet.crl()) == 0644);

  auto text = openssl_crl_text(fleet.crl());
  INFO(text.err);
  REQUIRE(text.exit_code == 0);
  CHECK(contains(text.out, "Serial Number: " + serial));
  CHECK(contains(text.out, "Key Compromise"));
  CHECK_FALSE(contains(text.out, fleet.show("dev-2")["certificates"][0]["serial"]));

  // What a relying party does with it: the revoked device fails, the other one still verifies.
  auto verify = [&](const char* cert) {
    return onboard::test::run({"/usr/bin/openssl", "verify", "-crl_check", "-CAfile",
                               (fleet.data / "ca" / "chain.pem").string(), "-CRLfile",
                               fleet.crl().string(), fleet.file(cert)});
  };
  auto revoked = verify("dev-1.crt");
  CHECK(revoked.exit_code != 0);
  CHECK(contains(revoked.out + revoked.err, "certificate revoked"));
  CHECK(verify("dev-2.crt").exit_code == 0);

  auto d = fleet.show("dev-1");
  CHECK(d["status"] == "revoked");
  CHECK(d["certificates"][0]["status"] == "revoked");
  CHECK(d["certificates"][0]["revocation_reason"] == "keyCompromise");

  const auto crl = slurp(fleet.crl());
  const auto rows = fleet.audit().size();
  auto twice = fleet({"device", "revoke", "dev-1", "--reason", "superseded"});
  CHECK(twice.exit_code == 0);
  CHECK(contains(twice.out, "dev-1 already revoked; nothing changed"));
  CHECK(fleet.audit().size() == rows);
  CHECK(slurp(fleet.crl()) == crl);
  CHECK(fleet.show("dev-1")["certificates"][0]["revocation_reason"] == "keyCompromise");

  auto enable = fleet({"device", "enable", "dev-1"});
  CHECK(enable.exit_code == 5);
  CHECK(contains(enable.err, "device dev-1 is revoked"));
  CHECK(fleet({"device", "disable", "dev-1"}).exit_code == 5);

  auto bad_reason = fleet({"device", "revoke", "dev-2", "--reason", "boredom"});
  CHECK(bad_reason.exit_code == 3);
  CHECK(contains(bad_reason.err, "--reason must be one of unspecified|keyCompromise"));
  CHECK(fleet.show("dev-2")["status"] == "active");
}

TEST_CASE("a revocation whose CRL cannot be written says so, and crl writes it later") {
  Fleet fleet;
  fleet.require_add("dev-1");
  std::filesystem::remove(fleet.crl());
  std::filesystem::create_directory(fleet.crl());  // rename() cannot replace a directory
  auto r = fleet({"device", "revoke", "dev-1"});
  CHECK(r.exit_code == 6);
  CHECK(contains(r.err, "revoked dev-1 in the registry, but the CRL was not rewritten"));
  CHECK(contains(r.err, "run 'onboardctl crl'"));
  CHECK(one_line_error(r));
  CHECK(fleet.show("dev-1")["status"] == "revoked");

  std::filesystem::remove(fleet.crl());
  auto crl = fleet({"crl"});
  INFO(crl.err);
  REQUIRE(crl.exit_code == 0);
  const std::string serial = fleet.show("dev-1")["certificates"][0]["serial"];
  CHECK(contains(openssl_crl_text(fleet.crl()).out, "Serial Number: " + serial));
}

TEST_CASE("cert renew issues a new certificate and revokes the old one as superseded") {
  Fleet fleet;
  fleet.require_add("dev-1");
  const std::string old_serial = fleet.show("dev-1")["certificates"][0]["serial"];

  auto r = fleet({"cert", "renew", "dev-1", "--key-alg", "p256", "--key-out", fleet.file("new.key"),
                  "--cert-out", fleet.file("new.crt")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "superseded 1"));
  CHECK(mode_of(fleet.out / "new.key") == 0600);

  auto d = fleet.show("dev-1");
  REQUIRE(d["certificates"].size() == 2);
  const auto& old_cert = d["certificates"][0];
  const auto& new_cert = d["certificates"][1];
  CHECK(old_cert["serial"] == old_serial);
  CHECK(old_cert["status"] == "revoked");
  CHECK(old_cert["revocation_reason"] == "superseded");
  CHECK(new_cert["status"] == "active");
  CHECK(new_cert["serial"] != old_serial);
  auto written = certificate_from_pem(slurp(fleet.out / "new.crt"));
  REQUIRE(written.ok());
  CHECK(describe_certificate(written->get()).serial_hex == new_cert["serial"].get<std::string>());
  CHECK(d["status"] == "active");

  auto text = openssl_crl_text(fleet.crl());
  CHECK(contains(text.out, "Serial Number: " + old_serial));
  CHECK(contains(text.out, "Superseded"));
  CHECK_FALSE(contains(text.out, new_cert["serial"].get<std::string>()));

  auto no_key_out = fleet({"cert", "renew", "dev-1", "--key-alg", "p256"});
  CHECK(no_key_out.exit_code == 3);
  CHECK(fleet.show("dev-1")["certificates"].size() == 2);
}

TEST_CASE("cert renew refuses a revoked device and leaves no key behind") {
  Fleet fleet;
  fleet.require_add("dev-1");
  REQUIRE(fleet({"device", "revoke", "dev-1"}).exit_code == 0);
  const auto crl = slurp(fleet.crl());
  auto r =
      fleet({"cert", "renew", "dev-1", "--key-alg", "p256", "--key-out", fleet.file("new.key")});
  CHECK(r.exit_code == 5);
  CHECK(contains(r.err, "device dev-1 is revoked"));
  CHECK(one_line_error(r));
  CHECK_FALSE(std::filesystem::exists(fleet.out / "new.key"));
  CHECK(fleet.show("dev-1")["certificates"].size() == 1);
  CHECK(slurp(fleet.crl()) == crl);
}

// ---- acl ---------------------------------------------------------------------------------------

TEST_CASE("acl grant and deny refuse bad access, bad patterns and unknown subjects") {
  Fleet fleet;
  fleet.require_add("dev-1");
  const auto rows = fleet.audit().size();

  auto access =
      fleet({"acl", "grant", "--device", "dev-1", "--access", "everything", "--topic", "a"});
  CHECK(access.exit_code == 3);
  CHECK(contains(access.err, "--access must be publish, subscribe, read or readwrite"));

  struct Case {
    std::string pattern, reason;
  };
  const std::vector<Case> patterns{
      {"a/#/b", "'#' must be the last level"},
      {"a+", "'+' and '#' must each be a whole level"},
      {"a/b#", "'+' and '#' must each be a whole level"},
      {"%x", "'%' in level 1 ('%x') must be followed by d (device id), c (client id) or u"},
      {"a/%", "'%' in level 2 ('%') must be followed by d (device id)"},
      {"x/%d+", "level 2 ('%d+') mixes a placeholder with a wildcard"},
      {"", "pattern is empty"},
  };
  for (const char* verb : {"grant", "deny"}) {
    for (const auto& c : patterns) {
      INFO(verb << " '" << c.pattern << "'");
      auto r =
          fleet({"acl", verb, "--device", "dev-1", "--access", "publish", "--topic", c.pattern});
      CHECK(r.exit_code == 3);
      CHECK(contains(r.err, "--topic: " + c.reason));
      CHECK(one_line_error(r));
    }
  }

  auto device = fleet({"acl", "grant", "--device", "ghost", "--access", "publish", "--topic", "a"});
  CHECK(device.exit_code == 4);
  CHECK(contains(device.err, "device ghost does not exist"));
  auto group = fleet({"acl", "deny", "--group", "ghosts", "--access", "read", "--topic", "a"});
  CHECK(group.exit_code == 4);
  CHECK(contains(group.err, "group ghosts does not exist"));
  auto neither = fleet({"acl", "grant", "--access", "read", "--topic", "a"});
  CHECK(neither.exit_code == 3);
  CHECK(contains(neither.err, "give either --device ID or --group NAME"));
  auto both = fleet({"acl", "grant", "--device", "dev-1", "--group", "default", "--access", "read",
                     "--topic", "a"});
  CHECK(both.exit_code == 2);

  CHECK(fleet.audit().size() == rows);
  CHECK(fleet.show("dev-1")["rules"].size() == 1);
}

TEST_CASE("acl list shows a device's or a group's rules, and remove takes one away") {
  Fleet fleet;
  fleet.require_add("dev-1", {"--type", "sensor"});
  auto grant = fleet({"acl", "grant", "--group", "sensor", "--access", "publish", "--topic",
                      "telemetry/%d", "--priority", "5"});
  INFO(grant.err);
  REQUIRE(grant.exit_code == 0);
  CHECK(contains(grant.out, "allow publish 'telemetry/%d' for group sensor"));
  auto deny = fleet({"acl", "deny", "--device", "dev-1", "--access", "subscribe", "--topic", "#"});
  REQUIRE(deny.exit_code == 0);

  auto group_rules = fleet({"acl", "list", "--group", "sensor", "--json"});
  REQUIRE(group_rules.exit_code == 0);
  auto rules = json::parse(group_rules.out);
  REQUIRE(rules.size() == 1);
  CHECK(rules[0]["pattern"] == "telemetry/%d");
  CHECK(rules[0]["priority"] == 5);
  const std::int64_t group_rule = rules[0]["id"];

  auto device_rules = fleet({"acl", "list", "--device", "dev-1"});
  REQUIRE(device_rules.exit_code == 0);
  CHECK(device_rules.out.starts_with("RULE "));
  CHECK(contains(device_rules.out, "device dev-1"));
  CHECK(contains(device_rules.out, "deny"));

  // Effective rules combine the device's, its type's and the default group's, highest first.
  auto effective = fleet.show("dev-1")["rules"];
  REQUIRE(effective.size() == 3);
  CHECK(effective[0]["id"] == group_rule);
  CHECK(effective[0]["subject"] == "sensor");

  auto removed = fleet({"acl", "remove", std::to_string(group_rule)});
  CHECK(removed.exit_code == 0);
  CHECK(removed.out == "removed rule " + std::to_string(group_rule) + "\n");
  CHECK(fleet.show("dev-1")["rules"].size() == 2);

  auto again = fleet({"acl", "remove", std::to_string(group_rule)});
  CHECK(again.exit_code == 4);
  CHECK(contains(again.err, "rule " + std::to_string(group_rule) + " does not exist"));
  for (const char* id : {"abc", "0", "-3", "1.5", "99999999999999999999999", "7x"}) {
    INFO(id);
    auto r = fleet({"acl", "remove", "--", id});  // "--": "-3" is a value, not an option
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "rule id must be a positive whole number"));
  }
  auto unknown_group = fleet({"acl", "list", "--group", "ghosts"});
  CHECK(unknown_group.exit_code == 4);
}

TEST_CASE("acl check explains each decision and the rule that made it") {
  Fleet fleet;
  fleet.require_add("dev-1");
  fleet.require_add("dev-2");
  auto check = [&](const std::string& device, const std::string& access, const std::string& topic) {
    auto r = fleet({"acl", "check", device, access, topic});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
  };

  SECTION("allowed through the default group's rule") {
    CHECK(check("dev-1", "publish", "devices/dev-1/temp") ==
          "allow: rule 1: allow readwrite 'devices/%d/#' priority 0\n");
    CHECK(check("dev-1", "subscribe", "devices/dev-1/#").starts_with("allow: rule 1"));
    CHECK(check("dev-1", "read", "devices/dev-1/cmd").starts_with("allow: rule 1"));
  }
  SECTION("another device's topic is denied") {
    CHECK(check("dev-1", "publish", "devices/dev-2/temp") ==
          "deny: no rule matches (default deny)\n");
    CHECK(check("dev-1", "subscribe", "devices/+/temp").starts_with("deny: "));
    CHECK(check("dev-1", "subscribe", "#").starts_with("deny: "));
  }
  SECTION("an explicit deny of higher priority wins over the default rule") {
    auto deny = fleet({"acl", "deny", "--device", "dev-1", "--access", "publish", "--topic",
                       "devices/%d/firmware/#", "--priority", "10"});
    REQUIRE(deny.exit_code == 0);
    CHECK(check("dev-1", "publish", "devices/dev-1/firmware/image") ==
          "deny: rule 2: deny publish 'devices/%d/firmware/#' priority 10\n");
    CHECK(check("dev-1", "read", "devices/dev-1/firmware/image").starts_with("allow: rule 1"));
    CHECK(check("dev-2", "publish", "devices/dev-2/firmware/image").starts_with("allow: rule 1"));

    auto as_json =
        fleet({"acl", "check", "dev-1", "publish", "devices/dev-1/firmware/x", "--json"});
    REQUIRE(as_json.exit_code == 0);
    auto parsed = json::parse(as_json.out);
    CHECK(parsed["decision"] == "deny");
    CHECK(parsed["rule_id"] == 2);
  }
  SECTION("a disabled device is denied whatever its rules say") {
    REQUIRE(fleet({"device", "disable", "dev-1"}).exit_code == 0);
    CHECK(check("dev-1", "publish", "devices/dev-1/temp") == "deny: the device is disabled\n");
    REQUIRE(fleet({"device", "revoke", "dev-1"}).exit_code == 0);
    CHECK(check("dev-1", "publish", "devices/dev-1/temp") == "deny: the device is revoked\n");
  }
  SECTION("a topic the broker would refuse is refused, not explained as a deny") {
    for (const char* topic : {"devices/dev-1/+", "devices/dev-1/#", ""}) {
      INFO(topic);
      auto r = fleet({"acl", "check", "dev-1", "publish", topic});
      CHECK(r.exit_code == 3);
      CHECK(contains(r.err, "TOPIC is not a valid topic name"));
    }
    auto filter = fleet({"acl", "check", "dev-1", "subscribe", "devices/#/x"});
    CHECK(filter.exit_code == 3);
    CHECK(contains(filter.err, "TOPIC is not a valid subscription filter"));
  }
  SECTION("readwrite is not a single access to check") {
    auto r = fleet({"acl", "check", "dev-1", "readwrite", "devices/dev-1/x"});
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "ACCESS must be one of publish, subscribe or read"));
  }
}

// ---- crl and audit -----------------------------------------------------------------------------

TEST_CASE("crl --out writes a signed PEM CRL under a higher number each time") {
  Fleet fleet;
  fleet.require_add("dev-1");
  REQUIRE(fleet({"device", "revoke", "dev-1"}).exit_code == 0);
  const std::string serial = fleet.show("dev-1")["certificates"][0]["serial"];
  std::uint64_t last = crl_number_of(fleet.crl());
  for (int i = 0; i < 2; ++i) {
    auto r = fleet({"crl", "--out", fleet.file("out.crl")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto number = crl_number_of(fleet.out / "out.crl");
    CHECK(number > last);
    CHECK(
        contains(r.out, "CRL " + std::to_string(number) + " written to " + fleet.file("out.crl")));
    last = number;
  }
  CHECK(mode_of(fleet.out / "out.crl") == 0644);
  CHECK(slurp(fleet.out / "out.crl").starts_with("-----BEGIN X509 CRL-----"));
  CHECK(contains(openssl_crl_text(fleet.out / "out.crl").out, "Serial Number: " + serial));

  auto missing = fleet({"crl", "--out", (fleet.out / "missing" / "out.crl").string()});
  CHECK(missing.exit_code == 6);
  CHECK(one_line_error(missing));
}

TEST_CASE("the audit log lists every change, and verify names an edited or deleted row") {
  Fleet fleet;
  for (const char* id : {"dev-a", "dev-b", "dev-c"}) fleet.require_add(id);
  REQUIRE(fleet({"device", "disable", "dev-a"}).exit_code == 0);
  REQUIRE(
      fleet({"acl", "grant", "--device", "dev-b", "--access", "read", "--topic", "x"}).exit_code ==
      0);

  auto events = fleet.audit();
  std::vector<std::string> actions;
  for (const auto& e : events) actions.push_back(e["action"].get<std::string>());
  CHECK(actions == std::vector<std::string>{"registry.create", "crl.issue", "device.register",
                                            "device.register", "device.register", "device.disable",
                                            "acl.grant"});
  CHECK(events[3]["subject"] == "dev-b");
  CHECK(events[3]["actor"].get<std::string>().starts_with("cli:"));
  auto table = fleet({"audit", "list"});
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.starts_with("SEQ "));
  CHECK(contains(table.out, "device.disable"));

  auto intact = fleet({"audit", "verify"});
  INFO(intact.err);
  REQUIRE(intact.exit_code == 0);
  CHECK(contains(intact.out, "audit log intact: 7 events"));

  auto tamper = [&](const std::string& sql) {
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE);
    CHECK(db.exec(sql) == 1);
  };
  auto expect_tampered = [&](const std::string& problem) {
    auto r = fleet({"audit", "verify"});
    CHECK(r.exit_code == 8);
    CHECK(contains(r.err, "audit log tampered with: " + problem));
    CHECK(one_line_error(r));
  };
  SECTION("a middle row's details edited") {
    tamper(R"(UPDATE audit_events SET details = '{"name":"someone-else"}' WHERE seq = 4)");
    expect_tampered("row 4 was edited");
  }
  SECTION("a middle row deleted") {
    tamper("DELETE FROM audit_events WHERE seq = 4");
    expect_tampered("row 4 is missing");
  }
  SECTION("a middle row edited and its own hash recomputed: the next row's link still knows") {
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE);
    SQLite::Statement q(db,
                        "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM "
                        "audit_events WHERE seq = 4");
    REQUIRE(q.executeStep());
    registry::AuditEvent row{q.getColumn(0).getInt64(),  q.getColumn(1).getInt64(),
                             q.getColumn(2).getString(), q.getColumn(3).getString(),
                             q.getColumn(4).getString(), q.getColumn(5).getString(),
                             q.getColumn(6).getString(), q.getColumn(7).getString()};
    q.reset();
    row.subject = "dev-z";
    SQLite::Statement update(db, "UPDATE audit_events SET subject = ?, hash = ? WHERE seq = 4");
    update.bind(1, row.subject);
    update.bind(2, registry::audit_hash(row));
    REQUIRE(update.exec() == 1);
    expect_tampered("row 4 was edited (row 5 links to another hash)");
  }
  SECTION("the newest row deleted") {
    tamper("DELETE FROM audit_events WHERE seq = 7");
    expect_tampered("row 7 is missing");
  }
}

TEST_CASE(
    "audit verify names an entity changed behind the tool's back and the row it differs from") {
  Fleet fleet;
  for (const char* id : {"dev-a", "dev-b"}) fleet.require_add(id);
  REQUIRE(fleet({"device", "disable", "dev-a"}).exit_code == 0);
  REQUIRE(fleet({"device", "revoke", "dev-b"}).exit_code == 0);
  REQUIRE(
      fleet({"acl", "grant", "--device", "dev-a", "--access", "read", "--topic", "x"}).exit_code ==
      0);
  auto seq_of = [&](const std::string& action, const std::string& subject) {
    std::int64_t seq = 0;
    for (const auto& e : fleet.audit()) {
      if (e["action"] == action && e["subject"] == subject) seq = e["seq"].get<std::int64_t>();
    }
    REQUIRE(seq > 0);
    return std::to_string(seq);
  };
  auto count = [&](const char* sql) {
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READONLY);
    return db.execAndGet(sql).getInt64();
  };
  const auto entities = count(
      "SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM certificates) + "
      "(SELECT count(*) FROM acl_rules) + (SELECT count(*) FROM groups) + "
      "(SELECT count(*) FROM api_tokens)");

  auto intact = fleet({"audit", "verify"});
  INFO(intact.err);
  REQUIRE(intact.exit_code == 0);
  CHECK(contains(intact.out, "audit log intact: "));
  CHECK(contains(intact.out, "registry state matches the log: " + std::to_string(entities) +
                                 " devices, certificates, rules, groups, tokens and claims"));

  auto tamper = [&](const std::string& sql) {
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE);
    CHECK(db.exec(sql) == 1);
  };
  auto expect_differs = [&](const std::string& problem) {
    auto r = fleet({"audit", "verify"});
    INFO(r.err);
    CHECK(r.exit_code == 8);
    CHECK(contains(r.err, "registry state differs from the audit log: " + problem));
    CHECK(one_line_error(r));
    CHECK(r.out.empty());
  };
  SECTION("a disabled device enabled") {
    const auto disabled = seq_of("device.disable", "dev-a");
    tamper("UPDATE devices SET status = 'active' WHERE id = 'dev-a'");
    expect_differs("device dev-a differs from row " + disabled +
                   ", the newest row that changed it (changed outside the registry)");
  }
  SECTION("a rule granting every topic added") {
    tamper(
        "INSERT INTO acl_rules (group_name, access, pattern, effect, priority, created_at) "
        "VALUES ('default', 7, '#', 'allow', 100, 1)");
    const auto id = std::to_string(count("SELECT max(id) FROM acl_rules"));
    expect_differs("rule " + id + " has no audit row behind it (added outside the registry)");
  }
  SECTION("a revoked certificate made active again") {
    const auto revoked = seq_of("device.revoke", "dev-b");
    const std::string fingerprint =
        SQLite::Database(fleet.registry().string(), SQLite::OPEN_READONLY)
            .execAndGet("SELECT sha256_fingerprint FROM certificates WHERE device_id = 'dev-b'")
            .getString();
    tamper(
        "UPDATE certificates SET status = 'active', revoked_at = NULL, revocation_reason = NULL "
        "WHERE device_id = 'dev-b'");
    expect_differs("certificate " + fingerprint + " differs from row " + revoked);
  }
  SECTION("a rule deleted") {
    const auto id = std::to_string(count("SELECT max(id) FROM acl_rules"));
    const auto granted = seq_of("acl.grant", id);
    tamper("DELETE FROM acl_rules WHERE id = " + id);
    expect_differs("rule " + id + " is missing, but row " + granted +
                   " recorded it (deleted outside the registry)");
  }
  SECTION("a device added") {
    tamper(
        "INSERT INTO devices (id, name, type, location, firmware, status, created_at, "
        "updated_at, metadata) VALUES ('ghost', 'ghost', '', '', '', 'active', 1, 1, '{}')");
    expect_differs("device ghost has no audit row behind it (added outside the registry)");
  }
  SECTION("a device moved into another group") {
    // Its groups are the default group and its type's: a new type moves it.
    const auto revoked = seq_of("device.revoke", "dev-b");
    tamper("UPDATE devices SET type = 'admins' WHERE id = 'dev-b'");
    expect_differs("device dev-b differs from row " + revoked);
  }
}

// ---- concurrency and damaged data --------------------------------------------------------------

TEST_CASE("two onboardctl processes registering at once lose nothing and never report a lock") {
  Fleet fleet;
  constexpr int kEach = 30;
  std::vector<RunResult> results[2];
  std::thread writers[2];
  for (int w = 0; w < 2; ++w) {
    writers[w] = std::thread([&fleet, &results, w] {
      for (int i = 0; i < kEach; ++i) {
        const std::string id = std::string(w == 0 ? "left-" : "right-") + std::to_string(i);
        results[w].push_back(onboard::test::run(
            {ONBOARDCTL_PATH, "--data-dir", fleet.data.path().string(), "device", "register", id,
             "--key-alg", "p256", "--key-out", fleet.file(id + ".key")}));
      }
    });
  }
  for (auto& t : writers) t.join();

  for (const auto& batch : results) {
    REQUIRE(batch.size() == kEach);
    for (const auto& r : batch) {
      INFO(r.err);
      CHECK(r.exit_code == 0);
      CHECK_FALSE(contains(r.err, "locked"));
    }
  }
  CHECK(fleet.device_count() == 2 * kEach);
  auto verify = fleet({"audit", "verify"});
  CHECK(verify.exit_code == 0);
  CHECK(contains(verify.out, "intact: " + std::to_string(2 + 2 * kEach) + " events"));
}

TEST_CASE("a damaged or foreign registry file is refused, untouched, with exit code 8") {
  Fleet fleet;
  fleet.require_add("dev-1");
  for (const char* suffix : {"-wal", "-shm"}) {
    std::filesystem::remove(fleet.data / (std::string("registry.db") + suffix));
  }
  std::string message;
  SECTION("junk") {
    std::string junk;
    for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 131 + 7) & 0xff));
    write(fleet.registry(), junk);
    message = "the file is not an SQLite database";
  }
  SECTION("an empty file, as a crash or a full disk may leave") {
    write(fleet.registry(), "");
    message = "is empty";
  }
  SECTION("another program's SQLite database") {
    std::filesystem::remove(fleet.registry());
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("CREATE TABLE notes (body TEXT)");
    message = "is an SQLite database but not a mosquitto-onboard registry";
  }
  SECTION("a registry from a newer onboardctl") {
    SQLite::Database db(fleet.registry().string(), SQLite::OPEN_READWRITE);
    db.exec("UPDATE meta SET schema_version = 99");
    message = "newer than this build understands";
  }
  const auto before = slurp(fleet.registry());

  for (const Args& args : std::vector<Args>{{"device", "list"},
                                            {"device", "show", "dev-1"},
                                            {"device", "register", "dev-2", "--key-alg", "p256",
                                             "--key-out", fleet.file("dev-2.key")},
                                            {"device", "revoke", "dev-1"},
                                            {"acl", "check", "dev-1", "publish", "devices/dev-1/x"},
                                            {"audit", "verify"},
                                            {"crl"}}) {
    INFO(args[0] << " " << (args.size() > 1 ? args[1] : ""));
    auto r = fleet(args);
    CHECK(r.exit_code == 8);
    CHECK(contains(r.err, fleet.registry().string()));
    CHECK(contains(r.err, message));
    CHECK(one_line_error(r));
  }
  const bool untouched = slurp(fleet.registry()) == before;  // not printed: it is binary
  CHECK(untouched);
  CHECK_FALSE(std::filesystem::exists(fleet.out / "dev-2.key"));
}

TEST_CASE("commands on a data directory that was never initialised point at init") {
  TempDir base;
  const auto dir = base / "nowhere";
  for (const Args& args : std::vector<Args>{{"device", "list"},
                                            {"device", "show", "dev-1"},
                                            {"device", "register", "dev-1", "--key-alg", "p256",
                                             "--key-out", (base / "dev-1.key").string()},
                                            {"acl", "list", "--group", "default"},
                                            {"audit", "verify"},
                                            {"crl"}}) {
    INFO(args[0] << " " << (args.size() > 1 ? args[1] : ""));
    auto r = onboardctl_in(dir, args);
    CHECK(r.exit_code == 4);
    CHECK(contains(r.err, "run 'onboardctl init' first"));
    CHECK(one_line_error(r));
  }
  CHECK_FALSE(std::filesystem::exists(dir));
  CHECK(files_in(base.path()) == 0);
}

// ---- usage -------------------------------------------------------------------------------------

namespace {

std::string joined(const Args& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

// Runs `onboardctl COMMAND --help`, which must succeed, print only on stdout and name the command.
RunResult help_of(const std::filesystem::path& data_dir, const Args& command) {
  Args args = command;
  args.push_back("--help");
  auto r = onboardctl_in(data_dir, args);
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  CHECK(contains(r.out, "Usage: onboardctl " + (command.empty() ? "" : joined(command) + " ")));
  return r;
}

// The names listed under "Subcommands:" in a help text.
std::vector<std::string> subcommands_in(const std::string& help) {
  std::vector<std::string> names;
  const auto section = help.find("\nSubcommands:\n");
  if (section == std::string::npos) return names;
  std::istringstream lines(help.substr(section + 14));
  for (std::string line; std::getline(lines, line) && line.starts_with("  ");) {
    names.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  return names;
}

}  // namespace

TEST_CASE("every command's --help exits 0 and lists its options") {
  TempDir data;
  const std::vector<std::pair<Args, Args>> commands{
      {{"init"},
       {"--group", "--no-group", "--key-alg", "--intermediate", "--crl-url", "--ocsp-url", "--org",
        "--passphrase-env", "--passphrase-file"}},
      {{"device"}, {"register", "list", "show", "update", "enable", "disable", "revoke"}},
      {{"device", "register"},
       {"ID", "--type", "--location", "--firmware", "--name", "--metadata", "--csr", "--key-alg",
        "--key-out", "--cert-out", "--days", "--force", "--passphrase-env", "--passphrase-file",
        "--hold-key", "--hold-passphrase-env", "--hold-passphrase-file"}},
      {{"device", "list"}, {"--status", "--type", "--limit", "--after", "--json"}},
      {{"device", "show"}, {"ID", "--json"}},
      {{"device", "update"}, {"ID", "--name", "--type", "--location", "--firmware", "--metadata"}},
      {{"device", "enable"}, {"ID"}},
      {{"device", "disable"}, {"ID"}},
      {{"device", "revoke"}, {"ID", "--reason", "keyCompromise", "--passphrase-env"}},
      {{"cert"}, {"list", "renew"}},
      {{"cert", "list"}, {"ID", "--json"}},
      {{"cert", "renew"},
       {"ID", "--csr", "--key-alg", "--key-out", "--cert-out", "--days", "--force",
        "--passphrase-env", "--hold-key", "--hold-passphrase-env"}},
      {{"acl"}, {"grant", "deny", "remove", "list", "check"}},
      {{"acl", "grant"}, {"--device", "--group", "--access", "--topic", "--priority"}},
      {{"acl", "deny"}, {"--device", "--group", "--access", "--topic", "--priority"}},
      {{"acl", "remove"}, {"RULE-ID"}},
      {{"acl", "list"}, {"--device", "--group", "--json"}},
      {{"acl", "check"}, {"DEVICE", "ACCESS", "TOPIC", "--json"}},
      {{"group"}, {"create", "list"}},
      {{"group", "create"}, {"NAME", "--description"}},
      {{"group", "list"}, {"--help"}},
      {{"crl"}, {"--out", "--passphrase-env", "--passphrase-file"}},
      {{"audit"}, {"list", "verify"}},
      {{"audit", "list"}, {"--limit", "--after", "--json"}},
      {{"audit", "verify"}, {"--help"}},
      {{"bundle"}, {"create", "link", "show"}},
      {{"bundle", "create"},
       {"DEVICE", "--batch", "--out", "--split", "--password-out", "--password-env",
        "--password-file", "--hold-passphrase-env", "--hold-passphrase-file", "--broker", "--force",
        "7-Zip"}},
      {{"bundle", "link"}, {"BUNDLE", "--ttl", "--base-url", "410"}},
      {{"bundle", "show"}, {"BUNDLE", "--json"}},
      {{"claim"}, {"create", "list", "show", "revoke"}},
      {{"claim", "create"},
       {"NAME", "--quota", "--expires", "--type", "--id-pattern", "--out", "--password-out",
        "--password-env", "--password-file", "--key-alg", "--broker", "--force", "--passphrase-env",
        "$provision/<its client id>/csr", "serve --provision-token-file"}},
      {{"claim", "list"}, {"--json"}},
      {{"claim", "show"}, {"NAME", "--json"}},
      {{"claim", "revoke"}, {"NAME", "--reason", "CRL", "--passphrase-env"}},
      {{"batch"}, {"register", "show"}},
      {{"batch", "register"},
       {"--csv", "--batch", "--key-alg", "--days", "--skip-existing", "--hold-passphrase-env",
        "--hold-passphrase-file", "--passphrase-env", "nothing is registered"}},
      {{"batch", "show"}, {"BATCH"}},
      {{"token"}, {"create", "list", "revoke"}},
      {{"token", "create"}, {"--name", "--role", "operator", "reader"}},
      {{"token", "list"}, {"--json"}},
      {{"token", "revoke"}, {"NAME"}},
      {{"registry"}, {"backup", "restore", "copy", "grants"}},
      {{"registry", "copy"}, {"--to", "LOCATION", "empty"}},
      {{"registry", "grants"}, {"--broker-role", "--writer-role", "psql", "Nothing is applied"}},
      {{"registry", "backup"}, {"FILE", "0600", "never overwritten"}},
      {{"registry", "restore"}, {"FILE", "--yes", "Revocations made since the backup stay"}},
      {{"serve"},
       {"--listen", "loopback", "--threads", "--max-body", "--tls-cert", "--tls-key",
        "--passphrase-env", "--hold-passphrase-env", "--hold-passphrase-file", "--list-routes",
        "--renewal-grace", "--renewal-min-age", "renewal_too_soon"}},
  };
  std::set<Args> checked;
  for (const auto& [command, options] : commands) {
    INFO(joined(command));
    auto r = help_of(data.path(), command);
    checked.insert(command);
    for (const auto& option : options) {
      INFO(option);
      CHECK(contains(r.out, option));
    }
  }
  // Every command the help tree names, the CA's too, answers --help; none is left out above.
  std::vector<Args> pending{{}};
  std::size_t walked = 0;
  while (!pending.empty()) {
    const Args command = pending.back();
    pending.pop_back();
    INFO(joined(command));
    auto r = help_of(data.path(), command);
    ++walked;
    for (const auto& sub : subcommands_in(r.out)) {
      Args child = command;
      child.push_back(sub);
      if (child[0] != "ca") CHECK(checked.count(child) == 1);
      pending.push_back(child);
    }
  }
  CHECK(walked > commands.size());
  CHECK(files_in(data.path()) == 0);  // asking for help touches nothing
}

TEST_CASE("registry usage errors exit 2 and point at --help") {
  TempDir data;
  for (const Args& args : std::vector<Args>{{"device"},
                                            {"device", "frobnicate"},
                                            {"device", "show"},
                                            {"acl", "grant", "--device", "d", "--topic", "a"},
                                            {"acl", "check", "dev-1", "publish"},
                                            {"device", "list", "--limit", "many"}}) {
    INFO(args[0] << " " << args[1 % args.size()]);
    auto r = onboardctl_in(data.path(), args);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "Run with --help for usage."));
  }
}
