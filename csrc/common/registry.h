// Which op families were compiled for which backend; filled at static-initialisation time by each
// family's translation unit and reported by fastgan._C.build_info().
#pragma once
#include <map>
#include <set>
#include <string>

namespace fastgan {

inline std::map<std::string, std::set<std::string>>& built_families() {
  static std::map<std::string, std::set<std::string>> families;
  return families;
}

struct FamilyRegistrar {
  FamilyRegistrar(const char* family, const char* backend) { built_families()[family].insert(backend); }
};

}  // namespace fastgan

#define FASTGAN_CONCAT_INNER(a, b) a##b
#define FASTGAN_CONCAT(a, b) FASTGAN_CONCAT_INNER(a, b)
#define FASTGAN_REGISTER_FAMILY(family, backend) \
  static ::fastgan::FamilyRegistrar FASTGAN_CONCAT(fastgan_family_registrar_, __LINE__)(family, backend)
