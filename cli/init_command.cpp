#include "cli/commands.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>

#include "ca/authority.h"
#include "core/files.h"
#include "ops/credentials.h"
#include "ops/workspace.h"
#include "registry/acl.h"
#include "registry/open.h"

namespace onboard::cli {
namespace {

using nlohmann::json;
using registry::Store;

Status set_group_access(const std::filesystem::path& path, gid_t gid, mode_t mode) {
  if (::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0 || ::chmod(path.c_str(), mode) != 0) {
    return make_error(
        Errc::io, "cannot set the group or mode of " + path.string() + ": " + std::strerror(errno));
  }
  return ok_status();
}

// The broker opens the registry after dropping its privileges, as a member of the group that
// owns the data directory: every folder above it must let that group (or everyone) through, or
// the broker cannot start. Returns the first folder that does not, walking down from `/`.
std::optional<std::filesystem::path> unsearchable_ancestor(const std::filesystem::path& dir,
                                                           gid_t gid) {
  std::filesystem::path prefix;
  for (const auto& part : std::filesystem::absolute(dir).lexically_normal().parent_path()) {
    prefix /= part;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) return prefix;
    const bool passes = (st.st_mode & S_IXOTH) != 0 || (st.st_gid == gid && (st.st_mode & S_IXGRP));
    if (!passes) return prefix;
  }
  return std::nullopt;
}

}  // namespace

// ---- init ------------------------------------------------------------------------------------

void add_init_command(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  struct Opts {
    std::string group = "mosquitto", key_alg = "rsa3072";
    bool no_group = false;
    ca::CaInitOptions ca;
    PassphraseSource passphrase;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("init",
                         "Create the data directory (CA and an empty CRL) and the registry, in it "
                         "or where --registry names it (an SQLite file, or the schema in a "
                         "PostgreSQL database)");
  cmd->add_option("--group", o->group,
                  "Group that may read the registry (the broker's user is in it), never write it: "
                  "the directory is made 2750 and the registry with its -wal and -shm files 0640, "
                  "which onboardctl keeps in place for the broker. A PostgreSQL registry's access "
                  "is by role instead ('onboardctl registry grants')")
      ->capture_default_str();
  cmd->add_flag("--no-group", o->no_group,
                "Keep everything private to the operator (the broker cannot read it)");
  cmd->add_option("--key-alg", o->key_alg,
                  "CA key algorithm: " + std::string(ca::kKeyAlgNames) + " (default rsa3072)");
  cmd->add_flag("--intermediate", o->ca.intermediate,
                "Also create an issuing CA (the root key can then go offline)");
  cmd->add_option("--crl-url", o->ca.crl_url,
                  "CRL distribution point URL written into issued certificates");
  cmd->add_option("--root-crl-url", o->ca.root_crl_url,
                  "With --intermediate: where the root's own CRL is published, written into the "
                  "intermediate's certificate (default: --crl-url with its last path segment "
                  "replaced by root-crl, as 'onboardctl serve' publishes it)");
  cmd->add_option("--ocsp-url", o->ca.ocsp_url,
                  "OCSP responder URL written into issued certificates (Authority Information "
                  "Access); 'onboardctl serve' answers at /ocsp");
  cmd->add_option("--org", o->ca.organization, "Organization (O) in the CA subjects");
  cmd->add_option("--ca-key", o->ca.token_key_uri,
                  "Generate the CA keys inside a PKCS#11 token, never to leave it: an RFC 7512 URI "
                  "pkcs11:token=LABEL;object=LABEL (with --intermediate the issuing key is "
                  "LABEL-issuing). The token's user PIN comes from --passphrase-env or "
                  "--passphrase-file, and later commands that sign need it the same way")
      ->type_name("URI");
  cmd->add_option("--pkcs11-module", o->ca.pkcs11_module,
                  "The PKCS#11 module (.so) that reaches the --ca-key token, remembered in "
                  "ca/ca.json (e.g. /usr/lib/softhsm/libsofthsm2.so)")
      ->envname("ONBOARD_PKCS11_MODULE")
      ->type_name("PATH");
  o->passphrase.add_to(*cmd, "the new CA keys");
  on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
    ONBOARD_TRY(const bool has_registry, ops::registry_exists(ws));
    if (has_registry) {
      return make_error(Errc::conflict, "a registry already exists at " +
                                            ws.registry_location.display() +
                                            "; refusing to touch it");
    }
    // A registry outside the data directory goes into a directory that exists: checked before
    // anything is made, so that a typo leaves no half-made data directory behind.
    const auto sqlite_file = ws.sqlite_registry();
    const bool registry_elsewhere = sqlite_file && sqlite_file->parent_path() != ws.dir;
    if (registry_elsewhere && !std::filesystem::is_directory(sqlite_file->parent_path())) {
      return make_error(Errc::not_found, "the registry's directory " +
                                             sqlite_file->parent_path().string() +
                                             " does not exist; create it first");
    }
    ONBOARD_TRY(o->ca.root_key_alg, ops::key_alg_option(o->key_alg));
    o->ca.intermediate_key_alg = o->ca.root_key_alg;
    const bool has_ca = std::filesystem::exists(ca::CaPaths(ws.dir).root_cert);
    if (!o->ca.token_key_uri.empty()) {
      if (has_ca) {
        return make_error(Errc::conflict,
                          "--ca-key makes a new CA, and " + ws.dir.string() + " has one already");
      }
      // A missing token or a wrong PIN fails here, before anything is made.
      ONBOARD_TRY(auto pin, o->passphrase.read());
      o->ca.passphrase = pin ? &*pin : nullptr;
      ONBOARD_CHECK(ca::check_token_access(o->ca));
      o->ca.passphrase = nullptr;
    }
    std::optional<gid_t> gid;
    if (!o->no_group) {
      const group* g = ::getgrnam(o->group.c_str());
      if (g == nullptr) {
        return make_error(
            Errc::not_found,
            "group '" + o->group +
                "' does not exist; create it, choose another with --group, or pass --no-group");
      }
      gid = g->gr_gid;
    }
    std::error_code ec;
    std::filesystem::create_directories(ws.dir, ec);
    if (ec) return make_error(Errc::io, "cannot create " + ws.dir.string() + ": " + ec.message());
    if (gid)
      ONBOARD_CHECK(set_group_access(ws.dir, *gid, 02750));
    else
      ::chmod(ws.dir.c_str(), 0700);

    bool made_ca = false;
    if (!has_ca) {
      ONBOARD_TRY(auto passphrase, o->passphrase.read());
      o->ca.passphrase = passphrase ? &*passphrase : nullptr;
      ONBOARD_TRY(auto created, ca::Authority::create(ws.dir, o->ca, unix_now()));
      (void)created;
      made_ca = true;
    }
    ONBOARD_TRY(auto ca, open_signing_ca(ws.dir, o->passphrase));
    ca::CaPaths paths(ws.dir);
    ONBOARD_CHECK(
        write_file_atomic(paths.dir / "chain.pem", ca.chain_pem(), 0644, Overwrite::replace));
    if (gid) ONBOARD_CHECK(set_group_access(paths.dir, *gid, 0750));

    // Creates the registry wherever its location names it, with the schema up to date.
    ONBOARD_TRY(auto store,
                registry::open_store(ws.registry_location, registry::OpenMode::read_write));
    // The broker reads the registry through its -wal and -shm files too, which it cannot create:
    // the writing open made them (and keeps them), here they get the group's read access.
    if (gid && sqlite_file) {
      for (const char* suffix : {"", "-wal", "-shm"}) {
        ONBOARD_CHECK(set_group_access(sqlite_file->string() + suffix, *gid, 0640));
      }
    }
    ONBOARD_TRY(std::uint64_t crl_number, ops::write_crl(*store, ca, ws.crl));
    ONBOARD_CHECK(ops::record_intermediate(*store, ca));
    std::string root_crl_line;
    if (ca.has_intermediate()) {
      ONBOARD_TRY(auto passphrase, o->passphrase.read());
      auto root_number = ops::write_root_crl(*store, ca, ws, passphrase ? &*passphrase : nullptr);
      if (root_number.ok()) {
        root_crl_line = "  root CRL  " + ws.root_crl.string() + " (number " +
                        std::to_string(root_number->value_or(0)) + ")\n";
      } else if (root_number.error().code == Errc::not_found) {
        root_crl_line = "  root CRL  not written: " + root_number.error().message + "\n";
      } else {
        return std::move(root_number).error();
      }
    }
    std::cout << "initialised " << ws.dir.string() << "\n"
              << "  registry  " << ws.registry_location.display() << "\n"
              << "  CA        " << paths.dir.string() << (made_ca ? " (new)" : " (existing)")
              << "\n"
              << "  chain     " << (paths.dir / "chain.pem").string() << "\n"
              << "  CRL       " << ws.crl.string() << " (number " << crl_number << ")\n"
              << root_crl_line << "  access    "
              << (!gid ? std::string("operator only")
                  : sqlite_file
                      ? "group " + o->group + " may read the registry, certificates and CRL"
                      : "group " + o->group +
                            " may read the certificates and CRL; the PostgreSQL registry's roles "
                            "get their rights from 'onboardctl registry grants'")
              << "\n";
    if (gid) {
      if (auto blocked = unsearchable_ancestor(ws.dir, *gid)) {
        std::cerr << "warning: group " << o->group << " cannot reach " << ws.dir.string() << ": "
                  << blocked->string() << " is not searchable by it, so a broker running as a "
                  << "member of that group cannot open the registry (chmod o+x "
                  << blocked->string() << ", or choose another data directory)\n";
      }
      if (registry_elsewhere) {
        std::cerr << "warning: the registry is outside the data directory: group " << o->group
                  << " needs to reach " << sqlite_file->parent_path().string()
                  << " (which init leaves as it is) and must not be able to write to it\n";
      }
    }
    return kExitOk;
  });
}

}  // namespace onboard::cli
