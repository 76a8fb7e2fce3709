#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "ops/grants.h"
#include "ops/workspace.h"
#include "registry/copy.h"
#include "registry/sqlite_backup.h"

namespace onboard::cli {
namespace {

// Backup and restore copy an SQLite file; a PostgreSQL registry has PostgreSQL's own tools.
Result<std::filesystem::path> sqlite_only(const ops::Workspace& ws, const char* what,
                                          const char* alternative) {
  if (auto file = ws.sqlite_registry()) return *file;
  return make_error(Errc::invalid_input, std::string("registry ") + what +
                                             " works on an SQLite registry only; the registry at " +
                                             ws.registry_location.display() +
                                             " is in PostgreSQL: use " + alternative);
}

void print_summary(const char* label, const registry::RegistrySummary& s) {
  std::cout << label << s.devices << " devices, change " << s.change_seq << ", audit "
            << s.audit_rows << " rows, head " << s.audit_head << "\n";
}

}  // namespace

// ---- registry -----------------------------------------------------------------------------------

void add_registry_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto* group = app.add_subcommand(
      "registry",
      "Back up and restore an SQLite registry (online: brokers and the server may run); copy a "
      "registry to another location (to PostgreSQL and back); print a PostgreSQL registry's "
      "grants");
  group->require_subcommand(1);
  {
    auto file = std::make_shared<std::string>();
    auto* cmd = group->add_subcommand(
        "backup",
        "Copy the registry to FILE (mode 0600) as of one moment, checked before it is kept; an "
        "existing FILE is never overwritten");
    cmd->add_option("FILE", *file, "Where to write the copy")->required();
    on_run(cmd, global, exit_code, [file](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(auto registry_file, sqlite_only(ws, "backup", "pg_dump"));
      ONBOARD_TRY(auto summary, registry::backup_sqlite_registry(registry_file, *file));
      std::cout << "backed up to " << *file << "\n";
      print_summary("  ", summary);
      return kExitOk;
    });
  }
  {
    struct Opts {
      std::string file;
      bool yes = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = group->add_subcommand(
        "restore",
        "Replace the registry's content with the backup FILE, in one transaction, while brokers "
        "run: they pick the restored state up and disconnect whoever it no longer allows. "
        "Revocations made since the backup stay (certificates, devices, API tokens), used bundle "
        "links stay used and erased held keys stay erased; CRL numbers and the change counter "
        "never go back. The audit log becomes the backup's, plus a registry.restore row naming the "
        "head "
        "of the log it replaced (keep a copy of the old registry if its history matters)");
    cmd->add_option("FILE", o->file, "A backup written by `onboardctl registry backup`")
        ->required();
    cmd->add_flag("--yes", o->yes, "Confirm: changes made since the backup are lost");
    on_run(cmd, global, exit_code, [o](const ops::Workspace& ws) -> Result<int> {
      if (!o->yes) {
        return make_error(Errc::invalid_input,
                          "a restore loses every change made since the backup other than "
                          "revocations; add --yes to go ahead");
      }
      ONBOARD_TRY(auto registry_file, sqlite_only(ws, "restore", "pg_restore"));
      ONBOARD_TRY(auto summary,
                  registry::restore_sqlite_registry(registry_file, o->file, ops::make_actor()));
      std::cout << "restored from " << o->file << "\n";
      print_summary("  now:      ", summary.restored);
      print_summary("  replaced: ", summary.replaced);
      std::cout << "  revocations kept: " << summary.revocations_kept
                << ", held keys dropped: " << summary.held_keys_dropped
                << ", devices and groups announced to brokers: " << summary.subjects_announced
                << "\n";
      return kExitOk;
    });
  }
  {
    auto to = std::make_shared<std::string>();
    auto* cmd = group->add_subcommand(
        "copy",
        "Copy the whole registry (--registry, or the data directory's) to LOCATION, e.g. from its "
        "SQLite file to PostgreSQL: every row with its ids, so that the audit chain, the change "
        "seq and the CRL numbers go on unchanged. The registry is only read (others may write "
        "meanwhile: the copy is of one moment). LOCATION must be empty: a new SQLite file, or a "
        "PostgreSQL database without tables; it is filled in one transaction, checked (row counts, "
        "audit chain, change seq) before it commits, and left as it was on any failure. Point "
        "onboardctl, serve and the brokers at LOCATION afterwards");
    cmd->add_option("--to", *to,
                    "Where to copy to: a new SQLite file's path or a PostgreSQL "
                    "location (as --registry takes)")
        ->required();
    on_run(cmd, global, exit_code, [to](const ops::Workspace& ws) -> Result<int> {
      ONBOARD_TRY(const auto target, registry::parse_location(*to));
      ONBOARD_TRY(const auto summary,
                  registry::copy_registry(ws.registry_location, target, unix_now()));
      std::cout << "copied " << ws.registry_location.display() << " to " << target.display()
                << "\n  " << summary.devices << " devices, " << summary.certificates
                << " certificates, audit " << summary.audit_rows << " rows, change "
                << summary.change_seq << ", audit head " << summary.audit_head << "\n";
      return kExitOk;
    });
  }
  {
    struct Opts {
      std::string broker_role, writer_role;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = group->add_subcommand(
        "grants",
        "Print the SQL that gives a PostgreSQL registry's roles their rights: the broker role "
        "reads meta, groups, devices, certificates, acl_rules and changes only; the writer role "
        "(onboardctl, serve) reads and writes every table's rows; neither changes the schema. "
        "Nothing is applied: run it as the tables' owner, e.g. onboardctl registry grants ... > "
        "grants.sql; psql -v ON_ERROR_STOP=1 -d DBNAME -f grants.sql");
    cmd->add_option("--broker-role", o->broker_role,
                    "The role the brokers connect as (a plain lower-case identifier)")
        ->required();
    cmd->add_option("--writer-role", o->writer_role,
                    "The role onboardctl and the REST server connect as")
        ->required();
    cmd->callback([o, &exit_code] {
      exit_code = run_action([&]() -> Result<int> {
        ONBOARD_TRY(auto sql, ops::postgresql_grants(o->broker_role, o->writer_role));
        std::cout << sql;
        return kExitOk;
      });
    });
  }
}

}  // namespace onboard::cli
