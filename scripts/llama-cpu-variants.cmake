# Included by llama-cpp-python's top-level CMakeLists (CMAKE_PROJECT_llama_cpp_INCLUDE) when
# scripts/install.sh builds the engine with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS.
#
# llama.cpp then builds its CPU backend once per instruction-set level, each as a module that
# ggml scores against the running CPU at load time; flashlive loads the best one
# (flashlive.engine.backends). llama-cpp-python installs only a single `ggml-cpu`, so this file
# installs the variants named in FLASHLIVE_CPU_VARIANTS next to libllama, where flashlive looks for
# them. The others are still compiled (ggml's own install rules ask for every variant) but never
# sit beside libllama, so they are never loaded; AMX (sapphirerapids) is one: see install.sh.
function(flashlive_install_cpu_variants)
    get_property(targets DIRECTORY "${CMAKE_SOURCE_DIR}/vendor/llama.cpp/ggml/src"
        PROPERTY BUILDSYSTEM_TARGETS)
    set(installed "")
    foreach(target IN LISTS targets)
        # (two tests: a failed MATCHES clears CMAKE_MATCH_1)
        if(target MATCHES "-feats$")
            continue()
        endif()
        if(NOT target MATCHES "^ggml-cpu-(.+)$")
            continue()
        endif()
        set(variant "${CMAKE_MATCH_1}")
        if(variant IN_LIST FLASHLIVE_CPU_VARIANTS)
            set_target_properties(${target} PROPERTIES
                INSTALL_RPATH "$ORIGIN" BUILD_WITH_INSTALL_RPATH TRUE)
            install(TARGETS ${target} LIBRARY DESTINATION "${SKBUILD_PLATLIB_DIR}/llama_cpp/lib")
            list(APPEND installed "${variant}")
        endif()
    endforeach()
    if(NOT installed)
        message(FATAL_ERROR "flashlive: none of the CPU variants '${FLASHLIVE_CPU_VARIANTS}' "
            "is among ggml's targets: ${targets}")
    endif()
    message(STATUS "flashlive: CPU variants built and installed: ${installed}")
endfunction()

if(NOT FLASHLIVE_CPU_VARIANTS)
    message(FATAL_ERROR "flashlive: FLASHLIVE_CPU_VARIANTS is not set")
endif()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL flashlive_install_cpu_variants)
