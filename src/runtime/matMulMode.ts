let fast = false;

/**
 * Whether the backend's matMul is a native BLAS (see nativeBlas.ts): then transposed products
 * cost what plain ones do and a product with a ones vector is the fastest way to sum, so the
 * dense layers and the reductions pick their formulation by it. Set by the backend.
 */
export function nativeMatMulActive(): boolean {
  return fast;
}

export function setNativeMatMulActive(value: boolean): void {
  fast = value;
}
