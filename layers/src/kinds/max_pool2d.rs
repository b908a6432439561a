//! `max_pool2d`: the largest value of each window.

crate::pool!(MaxPool2d, "max_pool2d", MaxPool2d, MaxPool2dConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_the_image() {
        let pool = MaxPool2d { kernel: 2, stride: 2 };
        assert_eq!(pool.output_shape(&[8, 32, 32]).unwrap(), vec![8, 16, 16]);
    }
}
