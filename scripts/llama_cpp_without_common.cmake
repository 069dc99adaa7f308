# Included by CMake at llama.cpp's own project() call (CMAKE_PROJECT_llama.cpp_INCLUDE, set by the Makefile), i.e.
# after llama-cpp-python's CMakeLists forces LLAMA_BUILD_COMMON on and before llama.cpp reads it.
# llama-common (the CLI tools' argument parser, HTTP client, downloader, ...) is not part of the Python package:
# llama_cpp loads libllama and libggml only. It was half of the build: 228 of 453 compiler CPU-seconds, and
# 1m15s against 2m36s for the whole wheel on 2 cores.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
