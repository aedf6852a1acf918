{
  "targets": [
    {
      "target_name": "grng_native",
      "sources": ["grng_native.c"],
      # -fno-trapping-math lets GCC vectorize the fused loops' compare-and-select (clips, floors):
      # Sophia's step over 670k values went from 7.7 to 0.9 ms. Nothing here installs FP trap
      # handlers, and NaN still compares false, so results do not change.
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra", "-fno-trapping-math"],
      "libraries": ["-ldl"]
    }
  ]
}
