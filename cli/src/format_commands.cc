// Format commands: nar dump/restore/ls, hash path/file, key generate, narinfo check/sign,
// compress/decompress. Each streams between stdin/stdout and the formats layer.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "background_sink.h"
#include "commands.h"
#include "narcache/narinfo/compression.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/nar.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/parallel_restore.h"

namespace narcache::cli {
namespace {

// Reading the mapped NAR file past its end (it shrank meanwhile) raises SIGBUS: report it and
// exit instead of dying silently. Only async-signal-safe calls in the handler.
void reportShrunkNarFile() {
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    const char message[] = "narcache: the NAR file on stdin shrank while it was being restored\n";
    (void)!::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(1);
  };
  ::sigaction(SIGBUS, &sa, nullptr);
}

Result<HashFormat> parseHashFormat(const std::string& name) {
  if (name == "nix32" || name == "base32") return HashFormat::kNix32;
  if (name == "base16") return HashFormat::kBase16;
  if (name == "base64") return HashFormat::kBase64;
  if (name == "sri") return HashFormat::kSri;
  return fail(ErrorCode::kInvalidArgument,
              "unknown hash format '" + name + "' (use nix32, base16, base64 or sri)");
}

// Writes `text` to stdout, failing on a short write (e.g. a closed pipe or a full disk).
int printOut(const std::string& text) {
  FdSink out(STDOUT_FILENO);
  if (auto s = out.write(asBytes(text)); !s) return reportError(s.error().withContext("stdout"));
  return 0;
}

Result<SecretKey> loadSecretKey(const std::string& path) {
  auto text = readFileContents(path);
  if (!text) return fail(text.error());
  auto key = SecretKey::parse(*text);
  if (!key) return fail(key.error().withContext(path));
  return key;
}

// Writes a new file with `mode`, refusing to replace an existing one.
Status writeNewFile(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return fail(errno == EEXIST ? ErrorCode::kAlreadyExists : ErrorCode::kIoError,
                "cannot create '" + path + "': " + std::strerror(errno));
  }
  FdSink sink(fd);
  auto status = sink.write(asBytes(text));
  if (::close(fd) != 0 && status) {
    status = fail(ErrorCode::kIoError, "close '" + path + "': " + std::strerror(errno));
  }
  if (!status) return fail(status.error().withContext(path));
  return {};
}

void addNarCommands(CommandRegistry& registry) {
  CLI::App* nar = registry.group(registry.app(), "nar", "NAR archives (Nix ARchive format)");

  auto dump_path = std::make_shared<std::string>();
  CLI::App* dump =
      nar->add_subcommand("dump", "Write the NAR of PATH to stdout (as nix-store --dump)");
  dump->add_option("PATH", *dump_path, "File, directory or symlink")->required();
  registry.add(dump, [dump_path] {
    growPipe(STDOUT_FILENO);
    FdSink out(STDOUT_FILENO);
    BufferedSink buffered(out);
    if (auto s = dumpPath(*dump_path, buffered); !s) return reportError(s.error());
    if (auto s = buffered.finish(); !s) return reportError(s.error().withContext("stdout"));
    return 0;
  });

  struct RestoreArgs {
    std::string dest;
    unsigned jobs = 0;
  };
  auto restore_args = std::make_shared<RestoreArgs>();
  CLI::App* restore =
      nar->add_subcommand("restore", "Unpack the NAR on stdin into DEST (which must not exist)");
  restore->add_option("DEST", restore_args->dest, "Destination path")->required();
  restore
      ->add_option("--jobs,-j", restore_args->jobs,
                   "Threads creating and writing files (default: the number of cores plus one, "
                   "2 to 16; 1 still overlaps reading the NAR with writing)")
      ->check(CLI::Range(0u, 256u));
  registry.add(restore, [args = restore_args] {
    // A NAR file on stdin is mapped and its contents copied by the kernel (see
    // MappedFileSource and restoreNarParallel); a pipe is read.
    FdSource piped(STDIN_FILENO);
    auto mapped = MappedFileSource::tryMap(STDIN_FILENO);
    if (mapped) {
      reportShrunkNarFile();
    } else {
      growPipe(STDIN_FILENO);
    }
    Source& in = mapped ? static_cast<Source&>(*mapped) : piped;
    narstore::ParallelRestoreOptions options;
    options.jobs = args->jobs;
    if (auto s = narstore::restoreNarParallel(in, args->dest, options); !s) {
      return reportError(s.error().withContext("restoring into '" + args->dest + "'"));
    }
    return 0;
  });

  CLI::App* ls = nar->add_subcommand("ls", "Print the listing of the NAR on stdin as .ls JSON");
  registry.add(ls, [] {
    growPipe(STDIN_FILENO);
    FdSource in(STDIN_FILENO);
    auto listing = narListing(in);
    if (!listing) return reportError(listing.error());
    return printOut(*listing + "\n");
  });
}

struct HashArgs {
  std::string target;
  std::string format = "nix32";
  std::string type = "sha256";
};

void addHashCommand(CommandRegistry& registry, CLI::App* group, const std::string& name,
                    const std::string& description, bool is_path) {
  auto args = std::make_shared<HashArgs>();
  CLI::App* cmd = group->add_subcommand(name, description);
  cmd->add_option(is_path ? "PATH" : "FILE", args->target)->required();
  cmd->add_option("--format", args->format, "nix32 (default), base16, base64 or sri");
  cmd->add_option("--type", args->type, "sha256 (default), sha512, sha1 or md5");
  registry.add(cmd, [args, is_path] {
    auto format = parseHashFormat(args->format);
    if (!format) return reportError(format.error());
    auto algo = parseHashAlgo(args->type);
    if (!algo) return reportError(algo.error());
    Hasher hasher(*algo);
    if (is_path) {
      // Reading the tree and hashing overlap on two cores.
      BackgroundSink background(hasher);
      if (auto s = dumpPath(args->target, background); !s) return reportError(s.error());
      if (auto s = background.finish(); !s) return reportError(s.error());
    } else {
      int fd = ::open(args->target.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        return reportError(Error(ErrorCode::kIoError,
                                 "cannot open '" + args->target + "': " + std::strerror(errno)));
      }
      FdSource in(fd);
      auto copied = copyStream(in, hasher);
      ::close(fd);
      if (!copied) return reportError(copied.error().withContext(args->target));
    }
    return printOut(hasher.digest().toString(*format) + "\n");
  });
}

void addKeyCommands(CommandRegistry& registry) {
  CLI::App* key = registry.group(registry.app(), "key", "Ed25519 signing keys (Nix format)");
  struct Args {
    std::string name, secret, pub;
  };
  auto args = std::make_shared<Args>();
  CLI::App* gen = key->add_subcommand("generate", "Generate a key pair");
  gen->add_option("--name", args->name, "Key name, e.g. cache.example.org-1")->required();
  gen->add_option("--secret", args->secret, "Where to write the secret key (mode 0600)")
      ->required();
  gen->add_option("--public", args->pub, "Where to write the public key")->required();
  registry.add(gen, [args] {
    auto secret = SecretKey::generate(args->name);
    if (!secret) return reportError(secret.error());
    if (auto s = writeNewFile(args->secret, secret->toString(), 0600); !s) {
      return reportError(s.error());
    }
    if (auto s = writeNewFile(args->pub, secret->publicKey().toString(), 0644); !s) {
      return reportError(s.error());
    }
    return printOut(secret->publicKey().toString() + "\n");
  });
}

void addNarInfoCommands(CommandRegistry& registry) {
  CLI::App* group = registry.group(registry.app(), "narinfo", "Check and sign .narinfo files");
  struct Args {
    std::string file, secret, store_dir = std::string(kDefaultStoreDir);
    std::vector<std::string> trusted;
  };

  auto check_args = std::make_shared<Args>();
  CLI::App* check = group->add_subcommand(
      "check", "Parse a narinfo; with --trusted-key, also require a valid signature by one");
  check->add_option("FILE", check_args->file)->required();
  check->add_option("--trusted-key", check_args->trusted, "Public key (name:base64) or key file");
  check->add_option("--store-dir", check_args->store_dir, "Store dir of the narinfo");
  registry.add(check, [args = check_args] {
    auto text = readFileContents(args->file);
    if (!text) return reportError(text.error());
    auto info = NarInfo::parse(*text, args->file, args->store_dir);
    if (!info) return reportError(info.error());
    auto keys = parseTrustedKeys(args->trusted);
    if (!keys) return reportError(keys.error());
    if (!keys->empty() && !hasValidSignature(*info, *keys)) {
      return reportError(Error(ErrorCode::kPermissionDenied,
                               args->file + ": no valid signature by a trusted key"));
    }
    return printOut(info->fullPath() + ": ok\n");
  });

  auto sign_args = std::make_shared<Args>();
  CLI::App* sign = group->add_subcommand("sign", "Print NARINFO with a Sig: line by the key added");
  sign->add_option("NARINFO", sign_args->file)->required();
  sign->add_option("--secret-key", sign_args->secret, "Secret key file")->required();
  sign->add_option("--store-dir", sign_args->store_dir, "Store dir of the narinfo");
  registry.add(sign, [args = sign_args] {
    auto key = loadSecretKey(args->secret);
    if (!key) return reportError(key.error());
    auto text = readFileContents(args->file);
    if (!text) return reportError(text.error());
    auto info = NarInfo::parse(*text, args->file, args->store_dir);
    if (!info) return reportError(info.error());
    signNarInfo(*info, *key);
    return printOut(info->toString());
  });
}

void addCompressionCommands(CommandRegistry& registry) {
  struct Args {
    std::string method;
    int level = -1;
    int threads = 0;
  };
  auto c_args = std::make_shared<Args>();
  CLI::App* compress = registry.app().add_subcommand("compress", "Compress stdin to stdout");
  compress->add_option("--method", c_args->method, "none, zstd, xz, bzip2, gzip or lzip")
      ->required();
  compress->add_option("--level", c_args->level, "Compression level (default: the method's)");
  compress->add_option("--threads", c_args->threads, "zstd worker threads (0: none)");
  registry.add(compress, [args = c_args] {
    auto method = parseCompression(args->method);
    if (!method) return reportError(method.error());
    growPipe(STDIN_FILENO);
    growPipe(STDOUT_FILENO);
    FdSource in(STDIN_FILENO);
    FdSink out(STDOUT_FILENO);
    auto compressor = makeCompressor(*method, out, {args->level, args->threads});
    if (!compressor) return reportError(compressor.error());
    if (auto n = copyStream(in, **compressor); !n) return reportError(n.error());
    if (auto s = (*compressor)->finish(); !s) return reportError(s.error());
    return 0;
  });

  auto d_args = std::make_shared<Args>();
  CLI::App* decompress = registry.app().add_subcommand("decompress", "Decompress stdin to stdout");
  decompress->add_option("--method", d_args->method, "none, zstd, xz, bzip2, gzip or lzip")
      ->required();
  registry.add(decompress, [args = d_args] {
    auto method = parseCompression(args->method);
    if (!method) return reportError(method.error());
    growPipe(STDIN_FILENO);
    growPipe(STDOUT_FILENO);
    FdSource in(STDIN_FILENO);
    FdSink out(STDOUT_FILENO);
    auto decompressor = makeDecompressor(*method, in);
    if (!decompressor) return reportError(decompressor.error());
    if (auto n = copyStream(**decompressor, out); !n) return reportError(n.error());
    return 0;
  });
}

}  // namespace

void registerFormatCommands(CommandRegistry& registry) {
  addNarCommands(registry);
  CLI::App* hash = registry.group(registry.app(), "hash", "Compute hashes as Nix prints them");
  addHashCommand(registry, hash, "path", "Hash the NAR serialisation of PATH (nix hash path)",
                 true);
  addHashCommand(registry, hash, "file", "Hash the bytes of FILE (nix hash file)", false);
  addKeyCommands(registry);
  addNarInfoCommands(registry);
  addCompressionCommands(registry);
}

}  // namespace narcache::cli
