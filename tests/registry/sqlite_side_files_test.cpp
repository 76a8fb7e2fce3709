// The registry's -wal and -shm files are given the registry file's mode (and, as root, its owner)
// by whoever opens it to write. In a directory another account can write, the name may be swapped
// for a link or a second name of someone else's file at any moment: what is changed is the file
// that was inspected, never whatever the name points to by then, and a side file that is not a
// regular file with one name is refused.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "registry/sqlite_store.h"
#include "tests/support/result.h"
#include "tests/support/temp_dir.h"

using namespace onboard;
using namespace onboard::registry;
using onboard::test::mode_of;
using onboard::test::must;
using onboard::test::TempDir;

namespace {

std::string contents(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

struct Owner {
  uid_t uid;
  gid_t gid;
};

Owner owner_of(const std::filesystem::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return {st.st_uid, st.st_gid};
}

// A registry with its side files, as a first onboardctl run leaves it, group-readable.
std::string make_registry(const TempDir& dir) {
  const std::string path = (dir / "registry.db").string();
  must(open_sqlite_store(path, OpenMode::read_write));
  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  must(open_sqlite_store(path, OpenMode::read_write));
  REQUIRE(mode_of(path + "-wal") == 0640);
  REQUIRE(mode_of(path + "-shm") == 0640);
  return path;
}

}  // namespace

TEST_CASE("a side file with a wrong mode is given the registry file's mode when it is opened") {
  TempDir dir;
  const std::string path = make_registry(dir);
  // What an older installation or a careless copy leaves: writable by the broker's group.
  REQUIRE(::chmod((path + "-wal").c_str(), 0660) == 0);
  REQUIRE(::chmod((path + "-shm").c_str(), 0606) == 0);
  must(open_sqlite_store(path, OpenMode::read_write));
  CHECK(mode_of(path + "-wal") == 0640);
  CHECK(mode_of(path + "-shm") == 0640);
}

TEST_CASE("a link planted as the registry's -wal is refused and the file it names is not changed") {
  TempDir dir;
  const std::string path = make_registry(dir);
  const auto victim = dir / "victim";
  { std::ofstream(victim) << "secret"; }
  REQUIRE(::chmod(victim.c_str(), 0600) == 0);
  const Owner before = owner_of(victim);
  const std::string wal = path + "-wal";

  // SQLite itself refuses a -wal that is a symbolic link; a second name it opens and uses (the
  // kernel lets only who may write a file link it: nothing gained there), and it is the check
  // here that refuses it before its owner or mode changes.
  std::string refusal;
  bool same_contents = true;
  SECTION("a symbolic link") {
    REQUIRE(::unlink(wal.c_str()) == 0);
    REQUIRE(::symlink(victim.c_str(), wal.c_str()) == 0);
    refusal = "the registry cannot be opened";
  }
  SECTION("a second name of another file") {
    REQUIRE(::unlink(wal.c_str()) == 0);
    REQUIRE(::link(victim.c_str(), wal.c_str()) == 0);
    refusal = wal + " is not a regular file with one name";
    same_contents = false;
  }
  auto opened = open_sqlite_store(path, OpenMode::read_write);
  REQUIRE_FALSE(opened.ok());
  INFO(opened.error().message);
  CHECK(opened.error().code == Errc::io);
  CHECK(opened.error().message.find(refusal) != std::string::npos);
  // A chmod by name would have made it 0640 like the registry; as root a chown by name would
  // have given it the registry's owner and group.
  CHECK(mode_of(victim) == 0600);
  const Owner after = owner_of(victim);
  CHECK(after.uid == before.uid);
  CHECK(after.gid == before.gid);
  if (same_contents) CHECK(contents(victim) == "secret");

  // The control: with the planted name gone, the same open works and SQLite makes a real -wal
  // with the registry's mode.
  REQUIRE(::unlink(wal.c_str()) == 0);
  must(open_sqlite_store(path, OpenMode::read_write));
  CHECK(mode_of(wal) == 0640);
}
