{
  "target_defaults": {
    "cflags_cc": ["-std=c++17", "-O3", "-fPIC"],
    "cflags_cc!": ["-std=gnu++17", "-O2"],
    "xcode_settings": {
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "GCC_OPTIMIZATION_LEVEL": "3"
    }
  },
  "targets": [
    {
      "target_name": "attnkit_native",
      "sources": [
        "src/engine/addon.cc",
        "src/engine/pool.cc",
        "src/engine/kernels_scalar.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["target_arch=='x64'", {
          "defines": ["ATTNKIT_X86=1"],
          "dependencies": ["attnkit_avx2", "attnkit_avx512", "attnkit_avx512vnni"]
        }]
      ]
    },
    {
      "target_name": "attnkit_avx512",
      "type": "static_library",
      "sources": ["src/engine/kernels_avx512.cc"],
      "defines": ["ATTNKIT_X86=1"],
      # GCC 12 reports its own _mm512_undefined_ps() inside max/min/roundscale/scalef as
      # uninitialised (GCC bug 105593); the flags silence only that.
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma",
                    "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma"]
      }
    },
    {
      "target_name": "attnkit_avx512vnni",
      "type": "static_library",
      "sources": ["src/engine/kernels_avx512vnni.cc"],
      "defines": ["ATTNKIT_X86=1"],
      # The int8 ops only (SageAttention2's vpdpbusd kernel); the flags as attnkit_avx512's.
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mfma",
                    "-Wno-uninitialized", "-Wno-maybe-uninitialized"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl",
                                 "-mavx512vnni", "-mfma"]
      }
    },
    {
      "target_name": "attnkit_avx2",
      "type": "static_library",
      "sources": ["src/engine/kernels_avx2.cc"],
      "defines": ["ATTNKIT_X86=1"],
      "cflags_cc": ["-mavx2", "-mfma"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma"]
      }
    }
  ]
}
