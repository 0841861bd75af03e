# Helpers shared by every folder's CMakeLists.txt.

# spar_warnings(target): the warning set every spar target compiles with.
function(spar_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# spar_reuse_torch_pch(target): compile `target` with spar_model's
# precompiled <torch/torch.h>. Executables are built -fPIE by default and GCC
# refuses a PCH made with -fPIC (the libraries'), so they get -fPIC too.
function(spar_reuse_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM spar_model)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
endfunction()

# spar_add_test_suite(NAME <name> SOURCES <...> LIBS <...> LABELS <...>
#                     [TIMEOUT s] [TORCH])
# One GoogleTest executable per source folder; every TEST becomes its own
# CTest test carrying the given labels (unit / integration / gpu). TORCH:
# the sources include LibTorch, so they reuse spar_model's precompiled
# <torch/torch.h> (~30 s saved per file on a 2-core machine).
function(spar_add_test_suite)
  cmake_parse_arguments(ARG "TORCH" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT ARG_SOURCES)
    return()
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_LIBS} spar_test_support GTest::gtest GTest::gmock GTest::gtest_main)
  spar_warnings(${ARG_NAME})
  if(ARG_TORCH)
    spar_reuse_torch_pch(${ARG_NAME})
  endif()
  gtest_discover_tests(${ARG_NAME}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()
