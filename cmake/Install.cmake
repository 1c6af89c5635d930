# `cmake --install build --prefix PREFIX`: llmtk as a library (docs/library.md). Headers keep their
# folders under include/llmtk; the static libraries and a CMake package (find_package(llmtk))
# whose targets are llmtk::llmtk (the framework, backends and trainer) and llmtk::cli (the
# command line as llmtk::cli::run). The llmtk binary is installed too.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# One target for the whole framework.
add_library(llmtk_library INTERFACE)
set_target_properties(llmtk_library PROPERTIES EXPORT_NAME llmtk)
target_link_libraries(llmtk_library INTERFACE llmtk_train llmtk_models llmtk_data llmtk_config llmtk_backends llmtk_core)
set_target_properties(llmtk_cli PROPERTIES EXPORT_NAME cli)

install(DIRECTORY framework/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/llmtk FILES_MATCHING PATTERN "*.hpp")
install(FILES tools/llmtk/cli.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/llmtk)
install(TARGETS llmtk_core llmtk_backends llmtk_models llmtk_config llmtk_data llmtk_train llmtk_cli llmtk_library
                llmtk_options
        EXPORT llmtkTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/llmtk)
install(TARGETS llmtk RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT llmtkTargets NAMESPACE llmtk:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmtk)
set(LLMTK_CONFIG_CUDA ${LLMTK_CUDA})
set(LLMTK_CONFIG_MPI ${LLMTK_MPI})
configure_package_config_file(cmake/llmtkConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/llmtkConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmtk)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/llmtkConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/llmtkConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/llmtkConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmtk)
