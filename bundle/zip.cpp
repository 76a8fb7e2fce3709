#include "bundle/zip.h"

#include <openssl/crypto.h>
#include <sys/stat.h>
#include <zip.h>

#include <climits>
#include <memory>
#include <set>

namespace onboard::bundle {
namespace {

// Owners for libzip objects. An archive that is still open when its owner dies is discarded
// (nothing is written); a source is freed unless an archive took it over.
struct ZipDiscard {
  void operator()(zip_t* z) const noexcept { zip_discard(z); }
};
struct ZipSourceFree {
  void operator()(zip_source_t* s) const noexcept { zip_source_free(s); }
};
struct ZipFileClose {
  void operator()(zip_file_t* f) const noexcept { zip_fclose(f); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipDiscard>;
using SourcePtr = std::unique_ptr<zip_source_t, ZipSourceFree>;
using FilePtr = std::unique_ptr<zip_file_t, ZipFileClose>;

// A zip_error_t that is always finalised.
class ZipError {
 public:
  ZipError() { zip_error_init(&error_); }
  ZipError(const ZipError&) = delete;
  ZipError& operator=(const ZipError&) = delete;
  ~ZipError() { zip_error_fini(&error_); }
  zip_error_t* get() { return &error_; }

 private:
  zip_error_t error_;
};

// A plain buffer that is cleansed when it goes away, for plaintext on its way into a Secret.
class WipedBuffer {
 public:
  explicit WipedBuffer(std::size_t size) : data_(size, '\0') {}
  WipedBuffer(const WipedBuffer&) = delete;
  WipedBuffer& operator=(const WipedBuffer&) = delete;
  ~WipedBuffer() { OPENSSL_cleanse(data_.data(), data_.size()); }
  char* data() { return data_.data(); }
  std::string_view view() const { return data_; }

 private:
  std::string data_;
};

std::string describe(zip_error_t* error) { return zip_error_strerror(error); }

Error libzip_error(std::string_view what, zip_error_t* error) {
  return make_error(Errc::internal, std::string(what) + ": " + describe(error));
}

Error archive_error(std::string_view what, zip_t* z) {
  return libzip_error(what, zip_get_error(z));
}

Status check_password(const Secret& password) {
  if (password.empty()) return make_error(Errc::invalid_input, "the bundle password is empty");
  if (password.view().find('\0') != std::string_view::npos) {
    return make_error(Errc::invalid_input, "the bundle password contains a NUL character");
  }
  return ok_status();
}

bool allowed_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status check_files(const std::vector<BundleFile>& files) {
  if (files.empty()) return make_error(Errc::invalid_input, "a bundle needs at least one file");
  std::set<std::string_view> names;
  for (const auto& file : files) {
    if (auto problem = entry_name_problem(file.name)) {
      return make_error(Errc::invalid_input, *problem);
    }
    if (!names.insert(file.name).second) {
      return make_error(Errc::invalid_input, "the bundle names '" + file.name + "' twice");
    }
    if ((file.mode & ~static_cast<mode_t>(0777)) != 0) {
      return make_error(Errc::invalid_input, "the mode of '" + file.name +
                                                 "' has bits outside 0777 (setuid, setgid, sticky "
                                                 "or a file type)");
    }
    if (file.mtime < 0) {
      return make_error(Errc::invalid_input, "the mtime of '" + file.name + "' is before 1970");
    }
  }
  return ok_status();
}

// Adds one entry: content by reference, AES-256, unix mode, mtime.
Status add_entry(zip_t* z, const BundleFile& file, const Secret& password) {
  // freep = 0: the Secret keeps ownership and outlives zip_close, which reads it.
  SourcePtr source(zip_source_buffer(z, file.content.view().data(), file.content.size(), 0));
  if (!source) return archive_error("cannot add " + file.name, z);
  const zip_int64_t index =
      zip_file_add(z, file.name.c_str(), source.get(), ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE);
  if (index < 0) return archive_error("cannot add " + file.name, z);
  (void)source.release();  // the archive owns it now
  const auto idx = static_cast<zip_uint64_t>(index);
  if (zip_file_set_encryption(z, idx, ZIP_EM_AES_256, password.c_str()) != 0) {
    return archive_error("cannot encrypt " + file.name, z);
  }
  const zip_uint32_t attributes = static_cast<zip_uint32_t>(S_IFREG | file.mode) << 16;
  if (zip_file_set_external_attributes(z, idx, 0, ZIP_OPSYS_UNIX, attributes) != 0) {
    return archive_error("cannot set the mode of " + file.name, z);
  }
  if (zip_file_set_mtime(z, idx, static_cast<time_t>(file.mtime), 0) != 0) {
    return archive_error("cannot set the time of " + file.name, z);
  }
  return ok_status();
}

// Reads everything a (closed, kept) buffer source holds: the finished archive, ciphertext only.
Result<std::string> source_contents(zip_source_t* source) {
  if (zip_source_open(source) != 0) {
    return libzip_error("cannot read the archive back", zip_source_error(source));
  }
  std::string out;
  char chunk[65536];
  for (;;) {
    const zip_int64_t n = zip_source_read(source, chunk, sizeof chunk);
    if (n < 0) {
      Error error = libzip_error("cannot read the archive back", zip_source_error(source));
      zip_source_close(source);
      return error;
    }
    if (n == 0) break;
    out.append(chunk, static_cast<std::size_t>(n));
  }
  zip_source_close(source);
  return out;
}

Result<std::string> build_archive(const std::vector<BundleFile>& files, const Secret& password) {
  ZipError error;
  SourcePtr buffer(zip_source_buffer_create(nullptr, 0, 0, error.get()));
  if (!buffer) return libzip_error("cannot create an archive in memory", error.get());
  ZipPtr z(zip_open_from_source(buffer.get(), ZIP_TRUNCATE, error.get()));
  if (!z) return libzip_error("cannot create an archive in memory", error.get());
  // The archive now holds one reference to the buffer and `buffer` keeps its own, so the written
  // bytes survive zip_close.
  zip_source_keep(buffer.get());

  for (const auto& file : files) ONBOARD_CHECK(add_entry(z.get(), file, password));
  if (zip_close(z.get()) != 0) return archive_error("cannot write the archive", z.get());
  (void)z.release();  // zip_close freed it
  return source_contents(buffer.get());
}

Error open_error(const std::filesystem::path& path, zip_error_t* error) {
  const int code = zip_error_code_zip(error);
  const std::string message = path.string() + ": " + describe(error);
  switch (code) {
    case ZIP_ER_OPEN:
    case ZIP_ER_NOENT:
    case ZIP_ER_READ:
    case ZIP_ER_SEEK:
    case ZIP_ER_MEMORY:
      return make_error(Errc::io, "cannot open " + message);
    default:
      return make_error(Errc::corrupt, "not a readable zip archive: " + message);
  }
}

// The error of a failed read or open of an AES entry, by libzip's code.
Error entry_error(const std::string& name, zip_error_t* error) {
  switch (zip_error_code_zip(error)) {
    case ZIP_ER_WRONGPASSWD:
    case ZIP_ER_NOPASSWD:
      return make_error(Errc::bad_passphrase, "wrong password for " + name);
    case ZIP_ER_CRC:
      // For AE-2 entries this is the HMAC check: a wrong password that passed the 16-bit check,
      // or altered ciphertext.
      return make_error(Errc::bad_passphrase,
                        "wrong password for " + name + ", or the archive was altered");
    case ZIP_ER_READ:
    case ZIP_ER_SEEK:
      return make_error(Errc::io, "cannot read " + name + ": " + describe(error));
    default:
      return make_error(Errc::corrupt, "cannot read " + name + ": " + describe(error));
  }
}

// Reads an entry's decrypted but still compressed data to its end, and so makes libzip check the
// AES entry's HMAC. libzip 1.7.3 checks it only when the decryption layer is read to its end, and a
// deflate reader above it stops at the end of the deflate stream without that last read, so a
// tampered compressed entry would otherwise read back without an error (nih-at/libzip#478).
Status authenticate_entry(zip_t* z, zip_uint64_t index, const std::string& name,
                          const Secret& password) {
  FilePtr raw(zip_fopen_index_encrypted(z, index, ZIP_FL_COMPRESSED, password.c_str()));
  if (!raw) return entry_error(name, zip_get_error(z));
  WipedBuffer chunk(16384);  // compressed plaintext: still secret
  for (;;) {
    const zip_int64_t n = zip_fread(raw.get(), chunk.data(), chunk.view().size());
    if (n < 0) return entry_error(name, zip_file_get_error(raw.get()));
    if (n == 0) break;
  }
  if (zip_fclose(raw.release()) != 0) {
    return make_error(Errc::corrupt, "cannot finish checking " + name);
  }
  return ok_status();
}

Result<BundleFile> read_entry(zip_t* z, zip_uint64_t index, const Secret& password,
                              std::uint64_t& budget) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, index, 0, &st) != 0) {
    return make_error(Errc::corrupt, "cannot read entry " + std::to_string(index) + ": " +
                                         describe(zip_get_error(z)));
  }
  const std::string name = (st.valid & ZIP_STAT_NAME) != 0 && st.name != nullptr ? st.name : "";
  if (auto problem = entry_name_problem(name)) return make_error(Errc::corrupt, *problem);
  if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) == 0 || st.encryption_method != ZIP_EM_AES_256) {
    return make_error(Errc::corrupt, name + " is not encrypted with AES-256");
  }
  if ((st.valid & ZIP_STAT_SIZE) == 0 || st.size > budget) {
    return make_error(Errc::corrupt, name + " is larger than the read limit allows");
  }
  budget -= st.size;

  BundleFile file;
  file.name = name;
  file.mtime = (st.valid & ZIP_STAT_MTIME) != 0 ? static_cast<UnixTime>(st.mtime) : 0;
  zip_uint8_t opsys = 0;
  zip_uint32_t attributes = 0;
  if (zip_file_get_external_attributes(z, index, 0, &opsys, &attributes) != 0) {
    return make_error(Errc::corrupt, "cannot read the attributes of " + name);
  }
  file.mode = opsys == ZIP_OPSYS_UNIX ? static_cast<mode_t>((attributes >> 16) & 0777) : 0644;

  ONBOARD_CHECK(authenticate_entry(z, index, name, password));
  FilePtr entry(zip_fopen_index_encrypted(z, index, 0, password.c_str()));
  if (!entry) return entry_error(name, zip_get_error(z));
  WipedBuffer plain(static_cast<std::size_t>(st.size));
  std::size_t got = 0;
  // Read one byte past the stated size: the HMAC is only checked at the end of the data.
  char probe = 0;
  for (;;) {
    const bool full = got == plain.view().size();
    char* target = full ? &probe : plain.data() + got;
    const zip_uint64_t want = full ? 1 : plain.view().size() - got;
    const zip_int64_t n = zip_fread(entry.get(), target, want);
    if (n < 0) return entry_error(name, zip_file_get_error(entry.get()));
    if (n == 0) break;
    if (full) return make_error(Errc::corrupt, name + " holds more data than its stated size");
    got += static_cast<std::size_t>(n);
  }
  if (got != plain.view().size()) {
    return make_error(Errc::corrupt, name + " holds less data than its stated size");
  }
  if (zip_fclose(entry.release()) != 0) {
    return make_error(Errc::corrupt, "cannot finish reading " + name);
  }
  file.content = Secret(plain.view());
  return file;
}

}  // namespace

std::optional<std::string> entry_name_problem(std::string_view name) {
  // Names read from an archive are hostile input: show at most 80 characters, printable only.
  std::string shown(name.substr(0, 80));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  }
  const std::string quoted = "entry name '" + shown + "'";
  if (name.empty()) return "an entry name is empty";
  if (name.size() > 255) return quoted + "... is longer than 255 characters";
  if (name.front() == '/') return quoted + " is absolute";
  if (name.back() == '/') return quoted + " names a directory";
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view part = name.substr(start, end - start);
    if (part.empty()) return quoted + " has an empty path component";
    if (part == "." || part == "..") return quoted + " has a '.' or '..' component";
    for (char c : part) {
      if (!allowed_name_char(c)) {
        return quoted + " may only use A-Z a-z 0-9 . _ - and '/' between components";
      }
    }
    start = end + 1;
  }
  return std::nullopt;
}

Status write_encrypted_zip(const std::filesystem::path& path, const std::vector<BundleFile>& files,
                           const Secret& password, Overwrite overwrite) {
  ONBOARD_CHECK(check_password(password));
  ONBOARD_CHECK(check_files(files));
  if (zip_encryption_method_supported(ZIP_EM_AES_256, 1) == 0) {
    return make_error(Errc::internal, "this libzip cannot write AES-256 encrypted archives");
  }
  // Fail early, before any work, when the output exists; write_file_atomic checks again without a
  // race when it renames.
  if (overwrite == Overwrite::refuse) {
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
      return make_error(Errc::conflict,
                        path.string() + " exists already; refusing to overwrite it");
    }
  }
  ONBOARD_TRY(std::string archive, build_archive(files, password));
  return write_file_atomic(path, archive, 0600, overwrite);
}

Result<std::vector<BundleFile>> read_encrypted_zip(const std::filesystem::path& path,
                                                   const Secret& password,
                                                   const ReadLimits& limits) {
  ONBOARD_CHECK(check_password(password));
  int code = 0;
  ZipPtr z(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (!z) {
    ZipError error;
    zip_error_init_with_code(error.get(), code);
    return open_error(path, error.get());
  }
  const zip_int64_t count = zip_get_num_entries(z.get(), 0);
  if (count < 0) return make_error(Errc::corrupt, path.string() + ": cannot count the entries");
  if (count == 0) return make_error(Errc::corrupt, path.string() + " holds no files");
  if (static_cast<std::uint64_t>(count) > limits.max_entries) {
    return make_error(Errc::corrupt, path.string() + " holds more entries than the read limit");
  }
  std::uint64_t budget = limits.max_total_bytes;
  std::vector<BundleFile> files;
  std::set<std::string> names;
  for (zip_uint64_t i = 0; i < static_cast<zip_uint64_t>(count); ++i) {
    ONBOARD_TRY(BundleFile file, read_entry(z.get(), i, password, budget));
    if (!names.insert(file.name).second) {
      return make_error(Errc::corrupt, path.string() + " holds " + file.name + " twice");
    }
    files.push_back(std::move(file));
  }
  return files;
}

}  // namespace onboard::bundle
